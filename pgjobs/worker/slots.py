"""Shared memory between the supervisor and its worker processes.

Each worker process owns one slot of int64 fields. The worker writes what it is
running; the supervisor reads it to enforce timeouts and cancels and writes the
cancel request back. No locks: the worker clears JOB before changing the other
fields and sets it last, and the supervisor re-reads JOB to confirm a snapshot.

After the fields, each slot lists the jobs whose handler started since the
worker last wrote every outcome it had (id and lease token). The supervisor
reads that list only once the process is dead, to tell the jobs that ran (their
attempt counts, even when the outcome was never written) from the ones it held
unstarted (they go back uncounted).
"""

from __future__ import annotations

import time
from multiprocessing.sharedctypes import RawArray
from typing import Any, NamedTuple

JOB, TOKEN, DEADLINE_MS, CANCEL_JOB, CANCEL_DEADLINE_MS, PID_CONTROL, PID_JOB, PID_BEACON = range(8)
FIELDS = 8
DEFAULT_STARTED = 100  # the default batch size


def size(count: int, batch_size: int = DEFAULT_STARTED) -> int:
    """The array a supervisor of ``count`` processes claiming ``batch_size``
    at a time shares with them: the fields, then a started list per slot."""
    return count * (FIELDS + _list_size(batch_size))


def _list_size(capacity: int) -> int:
    return 1 + 2 * (capacity + 1)  # a length, then (id, token) pairs


def now_ms() -> int:
    return int(time.time() * 1000)


class Running(NamedTuple):
    job_id: int
    lease_token: int
    deadline_ms: int


class Slots:
    def __init__(self, count: int, array: Any = None) -> None:
        self.count = count
        self.array = array if array is not None else RawArray("q", size(count))
        self.list_size = len(self.array) // count - FIELDS
        self.capacity = (self.list_size - 1) // 2

    def _list(self, index: int) -> int:
        return self.count * FIELDS + index * self.list_size

    def _base(self, index: int) -> int:
        return index * FIELDS

    def get(self, index: int, field: int) -> int:
        return int(self.array[self._base(index) + field])

    def put(self, index: int, field: int, value: int) -> None:
        self.array[self._base(index) + field] = value

    def start(self, index: int, job_id: int, lease_token: int, timeout_seconds: int) -> None:
        self._note_started(index, job_id, lease_token)
        base = self._base(index)
        self.array[base + JOB] = 0
        self.array[base + TOKEN] = lease_token
        self.array[base + DEADLINE_MS] = now_ms() + timeout_seconds * 1000 if timeout_seconds else 0
        self.array[base + JOB] = job_id

    def finish(self, index: int) -> None:
        base = self._base(index)
        self.array[base + JOB] = 0
        self.array[base + DEADLINE_MS] = 0

    def running(self, index: int) -> Running | None:
        base = self._base(index)
        job_id = self.array[base + JOB]
        if not job_id:
            return None
        snapshot = Running(job_id, self.array[base + TOKEN], self.array[base + DEADLINE_MS])
        return snapshot if self.array[base + JOB] == job_id else None

    def request_cancel(self, index: int, job_id: int, grace_seconds: float) -> None:
        base = self._base(index)
        self.array[base + CANCEL_DEADLINE_MS] = now_ms() + int(grace_seconds * 1000)
        self.array[base + CANCEL_JOB] = job_id

    def cancel_requested(self, index: int, job_id: int) -> bool:
        return bool(job_id) and self.array[self._base(index) + CANCEL_JOB] == job_id

    def backend_pids(self, index: int) -> list[int]:
        fields = (PID_CONTROL, PID_JOB, PID_BEACON)
        return [pid for pid in (self.get(index, f) for f in fields) if pid]

    def reset(self, index: int) -> None:
        base = self._base(index)
        for field in range(FIELDS):
            self.array[base + field] = 0
        self.written(index)

    # -- the started list ----------------------------------------------------

    def _note_started(self, index: int, job_id: int, lease_token: int) -> None:
        at = self._list(index)
        n = self.array[at]
        if n >= self.capacity:
            # Only if outcomes could not be written for more than a batch: the
            # oldest entries go (the rescue by lease still counts their attempt).
            n = self.capacity - 1
            self.array[at + 1 : at + 1 + 2 * n] = self.array[at + 3 : at + 3 + 2 * n]
        self.array[at + 1 + 2 * n] = job_id
        self.array[at + 2 + 2 * n] = lease_token
        self.array[at] = n + 1

    def written(self, index: int) -> None:
        """Every outcome of the jobs started so far is in the database."""
        self.array[self._list(index)] = 0

    def started(self, index: int) -> list[tuple[int, int]]:
        """(job id, lease token) of the jobs that started since the outcomes
        were last all written; read once the process is gone."""
        at = self._list(index)
        n = self.array[at]
        return [(self.array[at + 1 + 2 * i], self.array[at + 2 + 2 * i]) for i in range(n)]
