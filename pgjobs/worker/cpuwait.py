"""Time a thread spent runnable but waiting for a CPU (Linux schedstat).

With more processes than cores a handler's wall time holds the time its
process waited on the run queue: a 1 ms job then "takes" 5-10 ms, and batches
sized by wall time shrank towards one job, which multiplied the claims and
the writes per job, which took more CPU, which made the waits longer (at 64
processes on 2 cores: 5 jobs a claim, and a fifth of the rate of 16
processes). The batch size is fed the handler's time less this wait.

``/proc/thread-self/schedstat`` holds three numbers: nanoseconds on a CPU,
nanoseconds waiting on a run queue, time slices. The file is opened once, by
the thread that measures (the descriptor stays that thread's), and read with
one ``pread`` (about a microsecond). Where it does not exist the wait is 0,
and the batch is sized by wall time as before.
"""

from __future__ import annotations

import contextlib
import os
import time
import weakref

_SCHEDSTAT = "/proc/thread-self/schedstat"


class RunQueueClock:
    """Seconds the opening thread has waited for a CPU, cumulative."""

    def __init__(self, path: str = _SCHEDSTAT) -> None:
        self.fd: int | None = None
        self.last = 0.0  # what a failed read answers: the clock never runs backwards
        self._closer: weakref.finalize[[int], RunQueueClock] | None = None
        with contextlib.suppress(OSError):
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            # Closed once: by close(), or when the clock is dropped.
            self._closer = weakref.finalize(self, _close_quietly, self.fd)
            if self._read() is None:
                self.close()

    def _read(self) -> float | None:
        assert self.fd is not None
        try:
            fields = os.pread(self.fd, 128, 0).split()
            return int(fields[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return None

    def seconds(self) -> float:
        if self.fd is not None:
            self.last = self._read() or self.last
        return self.last

    def close(self) -> None:
        self.fd = None
        if self._closer is not None:
            self._closer()

    def work_time(self) -> float:
        """A monotonic clock that stands still while the thread waits for a CPU."""
        return time.monotonic() - self.seconds()


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
