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

_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Linux: when the supervisor ends, however it ends, we get ``signum``:
    SIGKILL for a helper that holds nothing, SIGTERM for a worker process,
    which then stops as on a shutdown (its job in hand finishes, the others go
    back). Elsewhere the processes look at their parent pid instead."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signum))


def become_child(
    log_json: bool | None, log_level: str, on_parent_death: int = signal.SIGKILL
) -> None:
    """Ends with the supervisor (at once if it is already gone), leaves the
    supervisor's signal handlers behind, and sets up logging."""
    parent = os.getppid()
    die_with_parent(on_parent_death)
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
