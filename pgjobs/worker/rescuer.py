"""The rescuer: settles what workers leave behind.

Two cases. A job whose lease expired (its process stopped renewing it: frozen,
killed, its host lost) is ended by the lease rescue, with the retry policy
applied, by one supervisor at a time: the one holding the rescue turn (a row
of pgjobs.maintenance_leases, renewed at each rescue, lost a lease after its
holder dies). Under that turn, the sessions such a process recorded are
terminated first, so its last query and locks go too (not behind a pooler).

A worker process that died or was killed under this supervisor is settled at
once, by one rule: its server sessions are terminated (so a long query stops
too; not behind a pooler, whose process ids are made up, where the job's
statement_timeout bounds it); every job it started counts an attempt (the one
it was running ends with the reason; those whose handler had returned but
whose outcome was not written yet, as the slot's started list says, count as
run); the jobs it held but never started go back to the queue uncounted,
except, when it crashed, one that a crashing process held before (then its
attempt counts, so a job that kills every process taking it ends). One
exception, when the supervisor killed it for one job: a job running beside
that one (async concurrency) goes back uncounted, logged as collateral.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from pgjobs.statements import Failed, Lease
from pgjobs.statements.control import log_keys
from pgjobs.statements.leases import (
    backend_terminate,
    lease_rescue,
    return_crashed,
    return_worker,
    worker_forget_stale,
    worker_sessions_end,
    worker_unregister,
)
from pgjobs.statements.maintenance import lease_release, lease_take
from pgjobs.statements.outcomes import fail_many
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.session import direct, worker_name
from pgjobs.worker.slots import Running, Slots

_MIN_RESCUE_SECONDS = 0.2


class Rescuer:
    def __init__(self, cfg: WorkerConfig, slots: Slots, log: Any) -> None:
        self.cfg = cfg
        self.slots = slots
        self.log = log
        self.conn: psycopg.Connection[Any] | None = None  # the supervisor's session
        self.next_rescue = 0.0

    def rescue_if_due(self) -> None:
        """Ends attempts whose lease expired; forgets long-silent worker rows."""
        if time.monotonic() < self.next_rescue:
            return
        assert self.conn is not None
        with self.conn.transaction():
            turn = lease_take(
                self.conn, duty="rescue", holder=worker_name(), seconds=self.cfg.lease_seconds
            )
            # The rescuer alone ends dead workers' sessions, before their attempts.
            ended_sessions = worker_sessions_end(self.conn) if turn and direct(self.cfg) else 0
            rescued = lease_rescue(self.conn) if turn else []
            worker_forget_stale(self.conn, stale_seconds=self.cfg.lease_seconds * 4)
        if ended_sessions:
            self.log.warning("dead_worker_sessions_ended", sessions=ended_sessions)
        for job in rescued:
            self.log.warning(
                "job_rescued",
                job_id=job.id,
                job_type=job.job_type,
                organization=job.organization,
                attempt=job.attempt,
                state=job.state,
            )
        self.next_rescue = time.monotonic() + max(self.cfg.lease_seconds / 4, _MIN_RESCUE_SECONDS)

    def settle(
        self,
        index: int,
        pid: int | None,
        ended: Sequence[tuple[Running, Failed]],
        *,
        crashed: str | None = None,
    ) -> None:
        """Settles a worker process that is gone: its sessions stop, the jobs it
        was running end with their reasons (none: given back uncounted, as at a
        forced shutdown), and the jobs it held unstarted go back. A job that was
        running beside the one that had the process killed (async concurrency)
        goes back without losing its attempt, and is logged as that collateral.
        ``crashed`` (why): it died on its own, so one of those may be the cause; a
        job a crashed process held unstarted before has its attempt counted this time."""
        assert self.conn is not None
        in_hand = {running.job_id for running in self.slots.running_all(index)}
        pids = self.slots.backend_pids(index)
        if pids and direct(self.cfg):
            backend_terminate(self.conn, pids=pids)
        # The jobs it was running end with their reasons; the others it
        # started had returned, their outcomes unwritten: those count as run.
        killed_for = [run.job_id for run, _ in ended]
        failures = [(Lease(run.job_id, run.lease_token), why) for run, why in ended]
        failures += [
            (Lease(job_id, token), _OUTCOME_LOST)
            for job_id, token in self.slots.started(index)
            if job_id not in in_hand and job_id not in killed_for
        ]
        if failures:
            fail_many(self.conn, failures)  # fenced: outcomes already written stay
        settled = [lease.id for lease, _ in failures]
        if pid is not None:
            name = worker_name(pid)
            if crashed is not None:
                for job_id, state in return_crashed(
                    self.conn, worker=name, except_ids=settled, reason=crashed
                ):
                    if state != "queued":
                        self.log.warning("job_crash_counted", state=state, **self.job_keys(job_id))
            else:
                returned = return_worker(self.conn, worker=name, except_ids=settled)
                for (job_id,) in returned:
                    if job_id in in_hand and ended:  # the kill's collateral
                        self.log.warning(
                            "job_returned_collateral",
                            pid=pid,
                            killed_for=killed_for,
                            **self.job_keys(job_id),
                        )
            worker_unregister(self.conn, worker=name)

    def settle_quietly(
        self, index: int, pid: int | None, ended: Sequence[tuple[Running, Failed]]
    ) -> bool:
        """:meth:`settle`, if the database answers; otherwise the process's
        jobs wait for the lease rescue (which counts their attempt)."""
        if self.conn is not None and not self.conn.closed:
            try:
                self.settle(index, pid, ended)
                return True
            except psycopg.Error as exc:
                self.log.warning("jobs_left_to_lease_rescue", pid=pid, error=str(exc).strip())
                return False
        self.log.warning("jobs_left_to_lease_rescue", pid=pid, error="no database session")
        return False

    def release(self) -> None:
        """Gives the rescue turn back (a clean stop), so another supervisor
        need not wait for it to expire."""
        if self.conn is not None and not self.conn.closed:
            with contextlib.suppress(psycopg.Error):
                lease_release(self.conn, duties=["rescue"], holder=worker_name())

    def job_keys(self, job_id: int) -> dict[str, Any]:
        """The keys every job event carries (job_id, job_type, organization,
        attempt), for the supervisor's rare events about one job."""
        keys: dict[str, Any] = {"job_id": job_id}
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                keys.update(log_keys(self.conn, job_id=job_id))
        return keys


def ended(error_class: str, message: str) -> Failed:
    """The outcome of an attempt the supervisor ended (or saw end) from outside."""
    return Failed(error_class, message, None, False, None)


# A job whose handler ran in a process that died before its outcome was written.
_OUTCOME_LOST = ended(
    "crash", "the worker process died after the job ran, before its outcome was written"
)
