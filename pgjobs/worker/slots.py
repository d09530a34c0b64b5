"""Shared memory between the supervisor and its worker processes.

Each worker process owns one slot of int64 fields: a header naming its server
sessions, then one *entry* per job it may run at once (``--concurrency``: one
for sync handlers, N coroutines for async ones). The worker writes into an
entry what it is running; the supervisor reads the entries to enforce
timeouts and cancels and writes cancel requests back. No locks: the worker
clears JOB before changing an entry's other fields and sets it last, and the
supervisor re-reads JOB to confirm a snapshot.
"""

from __future__ import annotations

import time
from multiprocessing.sharedctypes import RawArray
from typing import Any, NamedTuple

# An entry's fields (ASYNC: 1 while a coroutine runs it, which the worker's own
# loop cancels at the deadline; the supervisor's kill is then the backstop).
JOB, TOKEN, DEADLINE_MS, CANCEL_JOB, CANCEL_DEADLINE_MS, ASYNC = range(6)
ENTRY_FIELDS = 6
# The header's fields: the server sessions to terminate when the process goes.
PID_CONTROL, PID_JOB, PID_BEACON, PID_LOOP = range(4)
HEADER_FIELDS = 4


def now_ms() -> int:
    return int(time.time() * 1000)


def size(count: int, concurrency: int = 1) -> int:
    """How many int64 fields ``count`` slots of ``concurrency`` entries take."""
    return count * (HEADER_FIELDS + concurrency * ENTRY_FIELDS)


class Running(NamedTuple):
    job_id: int
    lease_token: int
    deadline_ms: int
    entry: int = 0
    is_async: bool = False


class Slots:
    def __init__(self, count: int, array: Any = None, concurrency: int = 1) -> None:
        self.count = count
        self.concurrency = concurrency
        self.width = HEADER_FIELDS + concurrency * ENTRY_FIELDS
        self.array = array if array is not None else RawArray("q", size(count, concurrency))

    def _base(self, index: int, entry: int = 0) -> int:
        """Where an entry's fields start."""
        return index * self.width + HEADER_FIELDS + entry * ENTRY_FIELDS

    def get(self, index: int, field: int) -> int:
        """A header field (PID_*)."""
        return int(self.array[index * self.width + field])

    def put(self, index: int, field: int, value: int) -> None:
        self.array[index * self.width + field] = value

    def start(
        self,
        index: int,
        job_id: int,
        lease_token: int,
        timeout_seconds: int,
        entry: int = 0,
        is_async: bool = False,
    ) -> None:
        base = self._base(index, entry)
        self.array[base + JOB] = 0
        self.array[base + TOKEN] = lease_token
        self.array[base + DEADLINE_MS] = now_ms() + timeout_seconds * 1000 if timeout_seconds else 0
        self.array[base + ASYNC] = int(is_async)
        self.array[base + JOB] = job_id

    def finish(self, index: int, entry: int = 0) -> None:
        base = self._base(index, entry)
        self.array[base + JOB] = 0
        self.array[base + DEADLINE_MS] = 0

    def running(self, index: int, entry: int = 0) -> Running | None:
        base = self._base(index, entry)
        job_id = self.array[base + JOB]
        if not job_id:
            return None
        snapshot = Running(
            job_id,
            self.array[base + TOKEN],
            self.array[base + DEADLINE_MS],
            entry,
            bool(self.array[base + ASYNC]),
        )
        return snapshot if self.array[base + JOB] == job_id else None

    def running_all(self, index: int) -> list[Running]:
        """Every job the process runs now, one per busy entry."""
        found = (self.running(index, entry) for entry in range(self.concurrency))
        return [running for running in found if running is not None]

    def request_cancel(self, index: int, job_id: int, grace_seconds: float) -> bool:
        """Asks the process to stop ``job_id``; False if it does not run it."""
        for entry in range(self.concurrency):
            base = self._base(index, entry)
            if self.array[base + JOB] == job_id:
                self.array[base + CANCEL_DEADLINE_MS] = now_ms() + int(grace_seconds * 1000)
                self.array[base + CANCEL_JOB] = job_id
                return True
        return False

    def cancel_requested(self, index: int, job_id: int) -> bool:
        if not job_id:
            return False
        return any(
            self.array[self._base(index, entry) + CANCEL_JOB] == job_id
            for entry in range(self.concurrency)
        )

    def cancel_deadline_ms(self, index: int, entry: int = 0) -> int:
        return int(self.array[self._base(index, entry) + CANCEL_DEADLINE_MS])

    def backend_pids(self, index: int) -> list[int]:
        fields = (PID_CONTROL, PID_JOB, PID_BEACON, PID_LOOP)
        return [pid for pid in (self.get(index, f) for f in fields) if pid]

    def reset(self, index: int) -> None:
        start = index * self.width
        for field in range(start, start + self.width):
            self.array[field] = 0
