"""Timeouts and cancels: what the supervisor enforces on running jobs.

A cancel request arrives by NOTIFY on ``pgjobs_cancel`` (the supervisor's
session LISTENs), or, behind a transaction-mode pooler (no LISTEN), is found
by reading the running attempts' rows every ``cancel_poll_seconds``; it is
written into the slot of the process running the job;
the handler sees it through ``ctx.raise_if_canceled()``. A job past its
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
from pgjobs.statements.leases import cancels_requested
from pgjobs.worker import slots as slot_fields
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.rescuer import ended
from pgjobs.worker.slots import Running, Slots, now_ms


class Overdue(NamedTuple):
    """A process to kill, the job it runs, and how that attempt ends."""

    slot: int
    running: Running
    reason: Failed


class Enforcer:
    def __init__(self, cfg: WorkerConfig, slots: Slots, log: Any) -> None:
        self.cfg = cfg
        self.slots = slots
        self.log = log
        self.pending_cancels: dict[int, float] = {}  # job id -> forget after
        self.next_cancel_poll = 0.0

    def read_cancels(
        self, conn: psycopg.Connection[Any], timeout: float, job_keys: Callable[[int], Any]
    ) -> None:
        """Waits up to ``timeout`` for cancel requests, then delivers what it can:
        a job not running here yet may start soon, so a request is kept for a
        lease's length before it is forgotten."""
        for note in conn.notifies(timeout=timeout):
            try:
                job_id = int(note.payload)
            except ValueError:
                continue
            self.pending_cancels[job_id] = time.monotonic() + self.cfg.lease_seconds
        if self.pending_cancels:
            self._deliver(job_keys)

    def poll_cancels(self, conn: psycopg.Connection[Any], job_keys: Callable[[int], Any]) -> None:
        """Pooler mode: reads which running attempts had a cancel requested, at
        most every ``cancel_poll_seconds``, and delivers those."""
        now = time.monotonic()
        if now < self.next_cancel_poll:
            return
        self.next_cancel_poll = now + self.cfg.cancel_poll_seconds
        running = [r for r in map(self.slots.running, range(self.cfg.processes)) if r]
        fresh = [r for r in running if not self._delivered(r.job_id)]
        if not fresh:
            return
        ids = [r.job_id for r in fresh]
        for job_id in cancels_requested(conn, ids=ids, tokens=[r.lease_token for r in fresh]):
            self.pending_cancels[job_id] = now + self.cfg.lease_seconds
        if self.pending_cancels:
            self._deliver(job_keys)

    def _delivered(self, job_id: int) -> bool:
        return any(
            self.slots.cancel_requested(index, job_id) for index in range(self.cfg.processes)
        )

    def _deliver(self, job_keys: Callable[[int], Any]) -> None:
        now = time.monotonic()
        for job_id, forget_at in list(self.pending_cancels.items()):
            for index in range(self.cfg.processes):
                running = self.slots.running(index)
                if running and running.job_id == job_id:
                    self.slots.request_cancel(index, job_id, self.cfg.cancel_grace_seconds)
                    del self.pending_cancels[job_id]
                    self.log.info("job_cancel_delivered", **job_keys(job_id))
                    break
            else:
                if now > forget_at:
                    del self.pending_cancels[job_id]

    def overdue(self, alive: Sequence[bool]) -> list[Overdue]:
        """The live processes whose job passed its timeout or its cancel grace."""
        now = now_ms()
        found = []
        for index, is_alive in enumerate(alive):
            running = self.slots.running(index) if is_alive else None
            if running is None:
                continue
            if running.deadline_ms and now > running.deadline_ms:
                reason = ended("timeout", "the job exceeded its timeout")
                found.append(Overdue(index, running, reason))
            elif self.slots.cancel_requested(index, running.job_id) and now > self.slots.get(
                index, slot_fields.CANCEL_DEADLINE_MS
            ):
                reason = ended("canceled", "canceled; did not stop within the grace")
                found.append(Overdue(index, running, reason))
        return found
