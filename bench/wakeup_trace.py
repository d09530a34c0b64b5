"""Where an idle worker's enqueue-to-start goes: per job, the enqueue call
(its commit included), the notification reaching the worker process, the
claim's round trip and the handler's start, all on one clock (``time.time``).

``python -m bench.wakeup_trace [--samples 200] [--processes 1] [--rate 0]``
runs a ``pgjobs worker`` importing this module, which, in the worker, stamps
when ``Wakeups._woken`` returns a wake-up and when ``Runner._claim`` starts
and returns (private names: a measuring tool, not an API), and registers the
``bench.trace`` job, whose handler sends its stamps by UDP. ``--rate 0``: one
job at a time, 30 ms apart, as ``measure.latency``; else Poisson arrivals at
that rate (jobs/s), as ``bench.pickup``. A job claimed without a wake-up of
its own process (a sibling's claim, a claim after a batch) counts its wake-up
as its claim's start. ``BENCH_DSN`` picks the server.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pgjobs

TRACE_PORT_ENV = "BENCH_TRACE_PORT"
_stamps: dict[str, float] = {}
_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


@pgjobs.job("bench.trace", max_attempts=1)
def trace(ctx: pgjobs.JobContext, seq: int) -> None:
    started = time.time()
    woken, c0, c1 = (_stamps.get(k, 0.0) for k in ("woken", "claim0", "claim1"))
    _stamps.clear()
    port = int(os.environ.get(TRACE_PORT_ENV, "0"))
    _sock.sendto(f"{seq} {woken!r} {c0!r} {c1!r} {started!r}".encode(), ("127.0.0.1", port))


def _instrument() -> None:
    """In the worker: the wake-up's and the claim's stamps."""
    from pgjobs.worker import runner, wakeups

    woken_fn = wakeups.Wakeups._woken
    claim_fn = runner.Runner._claim

    def woken(self: Any, conn: Any, timeout: float) -> bool:
        found: bool = woken_fn(self, conn, timeout)
        if found:
            _stamps["woken"] = time.time()
        return found

    def claim(self: Any) -> Any:
        c0 = time.time()
        jobs = claim_fn(self)
        if jobs:
            _stamps["claim0"], _stamps["claim1"] = c0, time.time()
        return jobs

    wakeups.Wakeups._woken = woken  # type: ignore[method-assign]
    runner.Runner._claim = claim  # type: ignore[method-assign]


if os.environ.get(TRACE_PORT_ENV):
    _instrument()

_PARTS = ("enqueue call", "enqueue -> woken", "woken -> claim", "claim round trip",
          "claim -> handler", "total")


def main(argv: list[str] | None = None) -> int:
    import subprocess

    import psycopg

    from bench import measure, pg
    from pgjobs import log, registry
    from pgjobs.migrate import migrate

    parser = argparse.ArgumentParser(prog="python -m bench.wakeup_trace", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0, help="jobs/s (0: one at a time)")
    args = parser.parse_args(argv)
    log.configure("warning")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    rows: list[tuple[float, ...]] = []
    with pg.database(pg.admin_dsn(), pg.database_name("trace")) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn)
            registry.sync(conn)
        env = {**os.environ, TRACE_PORT_ENV: str(sock.getsockname()[1]),
               "PYTHONPATH": os.pathsep.join(filter(None, (os.getcwd(),
                                                           os.environ.get("PYTHONPATH"))))}
        worker = subprocess.Popen(
            [str(Path(sys.executable).with_name("pgjobs")), "worker", "--dsn", dsn,
             "--processes", str(args.processes), "--import", "bench.wakeup_trace",
             "--log-level", "warning"], env=env)
        conn = psycopg.connect(dsn, autocommit=True)
        try:
            while True:  # the worker runs jobs at all
                pgjobs.enqueue(conn, "bench.trace", {"seq": -1})
                try:
                    sock.recv(200)
                    break
                except TimeoutError:
                    if worker.poll() is not None:
                        raise measure.BenchError("the worker exited") from None
            time.sleep(2.0)
            rng = random.Random(1)
            sent: dict[int, tuple[float, float]] = {}
            for seq in range(args.samples):
                time.sleep(rng.expovariate(args.rate) if args.rate else 0.03)
                t0 = time.time()
                pgjobs.enqueue(conn, "bench.trace", {"seq": seq})
                sent[seq] = (t0, time.time())
                if not args.rate:
                    _collect(sock, sent, rows, until=seq)
            _collect(sock, sent, rows, until=None)
        finally:
            worker.terminate()
            worker.wait()
            conn.close()
    for i, name in enumerate(_PARTS):
        ms = [r[i] * 1000 for r in rows]
        print(f"{name:18s} " + "  ".join(
            f"p{p} {measure.percentile(ms, p):7.3f}" for p in (50, 95, 99)))
    return 0


def _collect(sock: socket.socket, sent: dict[int, tuple[float, float]],
             rows: list[tuple[float, ...]], until: int | None) -> None:
    """Reads stamps until ``until``'s (None: every job sent) has come."""
    while sent and (until is None or until in sent):
        seq, *stamps = sock.recv(200).decode().split()
        if int(seq) not in sent:
            continue
        t0, t1 = sent.pop(int(seq))
        woken, c0, c1, started = map(float, stamps)
        woken = woken if woken >= t0 else c0  # not woken by a notification of its own
        rows.append((t1 - t0, woken - t0, c0 - woken, c1 - c0, started - c1, started - t0))


if __name__ == "__main__":
    raise SystemExit(main())
