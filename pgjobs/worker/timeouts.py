"""Timeouts and cancels: what the supervisor enforces on running jobs.

A cancel request arrives by NOTIFY on ``pgjobs_cancel`` (the supervisor's
session LISTENs) and is written into the slot of the process running the job;
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

    def _deliver(self, job_keys: Callable[[int], Any]) -> None:
        now = time.monotonic()
        grace = self.cfg.cancel_grace_seconds
        for job_id, forget_at in list(self.pending_cancels.items()):
            if any(self.slots.request_cancel(i, job_id, grace) for i in range(self.cfg.processes)):
                del self.pending_cancels[job_id]
                self.log.info("job_cancel_delivered", **job_keys(job_id))
            elif now > forget_at:
                del self.pending_cancels[job_id]

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
