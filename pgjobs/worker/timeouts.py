"""Timeouts and cancels: what the supervisor enforces on running jobs.

A NOTIFY on ``pgjobs_cancel`` (the supervisor's session LISTENs) is a hint,
never a command: any role may send one, with any payload. The supervisor acts
on a cancel only once it has read, under the attempt's lease, that
pgjobs.cancel requested it (``cancel_requested_at``); then it writes the
request into the slot of the process running the job, and the handler sees it
through ``ctx.raise_if_canceled()``. Hints wait in a bounded set, and every
``cancel_poll_seconds`` the jobs running here are checked anyway, so a hint
dropped (the set full of forgeries) or never sent (behind a transaction-mode
pooler there is no LISTEN) delays a cancel by that much at most. A job past its
timeout, or a canceled job that did not return within its grace, has its
process killed by the supervisor (SIGKILL, so a busy loop, a sleep and a
blocked C call all stop); the rescuer then settles it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import psycopg

from pgjobs.statements import Failed
from pgjobs.statements.leases import cancels_confirmed
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.rescuer import ended
from pgjobs.worker.slots import Running, Slots, now_ms


class Overdue(NamedTuple):
    """A process to kill, the job it runs, and how that attempt ends."""

    slot: int
    running: Running
    reason: Failed


# At most this many cancel hints wait for their job to start here; past it the
# oldest is dropped (the sweep still finds its cancel, if it was one).
MAX_HINTS = 1024
_MAX_JOB_ID = 2**63 - 1


def hinted_job(payload: str) -> int | None:
    """The job id a cancel hint names, or None for anything but a plain id."""
    if not (0 < len(payload) <= 19 and payload.isascii() and payload.isdigit()):
        return None
    job_id = int(payload)
    return job_id if 0 < job_id <= _MAX_JOB_ID else None


class Enforcer:
    def __init__(self, cfg: WorkerConfig, slots: Slots, log: Any) -> None:
        self.cfg = cfg
        self.slots = slots
        self.log = log
        # job id -> forget after; insertion order, so the oldest goes first.
        self.hints: dict[int, float] = {}
        self.next_sweep = 0.0

    def read_cancels(
        self, conn: psycopg.Connection[Any], timeout: float, job_keys: Callable[[int], Any]
    ) -> None:
        """Waits up to ``timeout`` for cancel hints, then delivers the cancels
        the database confirms. A hinted job not running here yet may start
        soon, so its hint is kept for a lease's length."""
        for note in conn.notifies(timeout=timeout):
            job_id = hinted_job(note.payload)
            if job_id is not None:
                self._hint(job_id)
        self._deliver(conn, job_keys)

    def poll_cancels(self, conn: psycopg.Connection[Any], job_keys: Callable[[int], Any]) -> None:
        """Without LISTEN (pooler mode) only the sweep finds cancels."""
        self._deliver(conn, job_keys)

    def _hint(self, job_id: int) -> None:
        self.hints.pop(job_id, None)
        self.hints[job_id] = time.monotonic() + self.cfg.lease_seconds
        while len(self.hints) > MAX_HINTS:
            del self.hints[next(iter(self.hints))]

    def _deliver(self, conn: psycopg.Connection[Any], job_keys: Callable[[int], Any]) -> None:
        """Asks the database about the running jobs that have a hint (all of
        them at a sweep); requests the cancel of those it confirms."""
        now = time.monotonic()
        sweep = now >= self.next_sweep
        if sweep:
            # Every this often the jobs running here are checked, hint or not.
            self.next_sweep = now + self.cfg.cancel_poll_seconds
            self.hints = {j: t for j, t in self.hints.items() if t > now}
        asked: list[tuple[int, Running]] = []  # every entry of every process
        for index in range(self.cfg.processes):
            for running in self.slots.running_all(index):
                if self.slots.cancel_requested(index, running.job_id):
                    continue
                if sweep or running.job_id in self.hints:
                    asked.append((index, running))
        if not asked:
            return
        leases = [(r.job_id, r.lease_token) for _, r in asked]
        confirmed = cancels_confirmed(conn, leases=leases)
        for index, running in asked:
            self.hints.pop(running.job_id, None)  # answered by the row, either way
            if running.job_id in confirmed:
                self.slots.request_cancel(index, running.job_id, self.cfg.cancel_grace_seconds)
                self.log.info("job_cancel_delivered", **job_keys(running.job_id))

    def overdue(self, alive: Sequence[bool]) -> list[Overdue]:
        """The jobs of live processes that passed their timeout or cancel grace.

        A coroutine is cancelled by its own process at the deadline; its
        process is killed only if it is still there a cancel grace later."""
        now = now_ms()
        found = []
        for index, is_alive in enumerate(alive):
            for running in self.slots.running_all(index) if is_alive else ():
                reason = self._reason(index, running, now)
                if reason is not None:
                    found.append(Overdue(index, running, reason))
        return found

    def _reason(self, index: int, running: Running, now: int) -> Failed | None:
        backstop = int(self.cfg.cancel_grace_seconds * 1000) if running.is_async else 0
        if running.deadline_ms and now > running.deadline_ms + backstop:
            return ended("timeout", "the job exceeded its timeout")
        if self.slots.cancel_requested(index, running.job_id) and now > (
            self.slots.cancel_deadline_ms(index, running.entry)
        ):
            return ended("canceled", "canceled; did not stop within the grace")
        return None
