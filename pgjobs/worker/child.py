"""What every process the supervisor forks (workers, exporter, pruner) does
first, and how it leaves."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from typing import NoReturn

from pgjobs import log as pgjobs_log


def die_with_parent() -> None:
    """Linux: if the supervisor is killed, so are we; leases bring the jobs back."""
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def become_child(log_json: bool | None, log_level: str) -> None:
    """Dies with the supervisor (at once if it is already gone), leaves the
    supervisor's signal handlers behind, and sets up logging."""
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:
        os._exit(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pgjobs_log.configure(level=log_level, json_lines=log_json)


def leave(code: int) -> NoReturn:
    """Exits by os._exit, so that nothing inherited from the supervisor (its
    connection above all) is finalized here; output is flushed first."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
