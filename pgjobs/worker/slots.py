"""Shared memory between the supervisor and its worker processes.

Each worker process owns one slot of int64 fields. The worker writes what it is
running; the supervisor reads it to enforce timeouts and cancels and writes the
cancel request back. No locks: the worker clears JOB before changing the other
fields and sets it last, and the supervisor re-reads JOB to confirm a snapshot.
"""

from __future__ import annotations

import time
from multiprocessing.sharedctypes import RawArray
from typing import Any, NamedTuple

JOB, TOKEN, DEADLINE_MS, CANCEL_JOB, CANCEL_DEADLINE_MS, PID_CONTROL, PID_JOB, PID_BEACON = range(8)
FIELDS = 8


def now_ms() -> int:
    return int(time.time() * 1000)


class Running(NamedTuple):
    job_id: int
    lease_token: int
    deadline_ms: int


class Slots:
    def __init__(self, count: int, array: Any = None) -> None:
        self.count = count
        self.array = array if array is not None else RawArray("q", count * FIELDS)

    def _base(self, index: int) -> int:
        return index * FIELDS

    def get(self, index: int, field: int) -> int:
        return int(self.array[self._base(index) + field])

    def put(self, index: int, field: int, value: int) -> None:
        self.array[self._base(index) + field] = value

    def start(self, index: int, job_id: int, lease_token: int, timeout_seconds: int) -> None:
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
