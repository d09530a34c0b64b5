"""Shared memory between the supervisor and its worker processes.

Each worker process owns one slot of int64 fields: a header naming its server
sessions, then one *entry* per job it may run at once (``--concurrency``: one
for sync handlers, N coroutines for async ones). The worker writes into an
entry what it is running; the supervisor reads the entries to enforce
timeouts and cancels and writes cancel requests back. No locks: the worker
clears JOB before changing an entry's other fields and sets it last, and the
supervisor re-reads JOB to confirm a snapshot.

After the entries, each slot lists the jobs whose handler started since the
worker last wrote every outcome it had (id and lease token). The supervisor
reads that list only once the process is dead, to tell the jobs that ran (their
attempt counts, even when the outcome was never written) from the ones it held
unstarted (they go back uncounted).
"""

from __future__ import annotations

import time
from multiprocessing.sharedctypes import RawArray
from typing import Any, NamedTuple

# An entry's fields (ASYNC: 1 while a coroutine runs it, which the worker's own
# loop cancels at the deadline; the supervisor's kill is then the backstop).
JOB, TOKEN, DEADLINE_MS, CANCEL_JOB, CANCEL_DEADLINE_MS, ASYNC = range(6)
ENTRY_FIELDS = 6
# The header's fields: the server sessions to terminate when the process goes,
# then TURN: 1 while the process holds (or is taking) its supervisor's
# listening turn, which the supervisor gives back if the process dies with it
# (pgjobs.worker.wakeups.Doorbell).
PID_CONTROL, PID_JOB, PID_BEACON, PID_LOOP, TURN = range(5)
HEADER_FIELDS = 5
DEFAULT_BATCH = 100  # the default batch size: what a started list must hold


def now_ms() -> int:
    return int(time.time() * 1000)


def size(count: int, concurrency: int = 1, batch_size: int = DEFAULT_BATCH) -> int:
    """How many int64 fields ``count`` slots of ``concurrency`` entries take,
    each with a started list for what a process claiming ``batch_size`` at a
    time may hold (a claim takes up to ``concurrency`` more ahead)."""
    started = 1 + 2 * (batch_size + concurrency + 1)  # a length, then (id, token) pairs
    return count * (HEADER_FIELDS + concurrency * ENTRY_FIELDS + started)


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
        self.array = array if array is not None else RawArray("q", size(count, concurrency))
        self.width = len(self.array) // count
        self.list_at = HEADER_FIELDS + concurrency * ENTRY_FIELDS  # the started list
        self.capacity = (self.width - self.list_at - 1) // 2

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
        self._note_started(index, job_id, lease_token)
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

    # -- the started list ----------------------------------------------------

    def _list(self, index: int) -> int:
        return index * self.width + self.list_at

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
        """Every outcome of the jobs that started and ended so far is in the
        database; the jobs still running stay listed."""
        running = {(r.job_id, r.lease_token) for r in self.running_all(index)}
        at = self._list(index)
        if not running:
            self.array[at] = 0
            return
        keep = [pair for pair in self.started(index) if pair in running]
        self.array[at] = 0
        for job_id, token in keep:
            self._note_started(index, job_id, token)

    def started(self, index: int) -> list[tuple[int, int]]:
        """(job id, lease token) of the jobs that started since the outcomes
        were last all written; read once the process is gone."""
        at = self._list(index)
        n = self.array[at]
        return [(self.array[at + 1 + 2 * i], self.array[at + 2 + 2 * i]) for i in range(n)]
