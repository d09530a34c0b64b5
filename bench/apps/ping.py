"""The ping handlers' one job: tell the harness, by UDP, when they started."""

from __future__ import annotations

import os
import socket
import time

_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def report(seq: int) -> None:
    stamp = time.time()  # first: the start of the handler is what is measured
    port = int(os.environ.get("BENCH_PING_PORT", "0"))
    if port:
        _sock.sendto(f"{seq} {stamp!r}".encode(), ("127.0.0.1", port))


# What each job of the I/O-bound drain waits (bench/aio.py), in every system.
SLEEP_SECONDS = 0.01
