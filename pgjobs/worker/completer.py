"""The completer: where an attempt's outcome is written.

Outcomes wait in a buffer and are written in bulk (one pipeline of
job_complete_many and job_fail_many) after at most ``flush_seconds``, at the
end of a batch, and before the worker sleeps. A handler that wrote through
``ctx.conn`` has its own transaction, which the completion joins: its writes
and the job's completion commit (or roll back) together. Every write is
fenced by the claim's lease token; until it is written, the beacon keeps the
lease, so nothing is rescued twice.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from pgjobs.faults import classify
from pgjobs.statements import ClaimedJob, Completed, Failed, Outcome, run, run_writes
from pgjobs.statements.leases import worker_session_add
from pgjobs.statements.outcomes import complete_many, fail_many, return_many
from pgjobs.statements.sessions import job_transaction_begin
from pgjobs.worker import slots as slot_fields
from pgjobs.worker.beacon import Leases
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.cpuwait import RunQueueClock
from pgjobs.worker.gate import Gate, passage
from pgjobs.worker.session import connect, direct, worker_name
from pgjobs.worker.slots import Slots
from pgjobs.worker.starting import JobSetupFailed

# A job's statements may outlive its timeout by this much: the supervisor's kill
# is what enforces the timeout (and records it as one); the statement timeout is
# only the backstop for a supervisor that is not there to kill.
_STATEMENT_TIMEOUT_MARGIN_MS = 1000
# Completions are written this many at a time at most: job_complete_many looks
# each row's values up by position in its arrays, which costs the square of
# the batch (nothing at the default batch of 100, a lot at 10,000).
_COMPLETE_CHUNK = 500


class Completer:
    def __init__(
        self,
        cfg: WorkerConfig,
        leases: Leases,
        slots: Slots,
        index: int,
        log: Any,
        gate: Gate | None = None,
    ) -> None:
        self.cfg = cfg
        self.gate = gate  # taken around each write (never in a job's transaction)
        self.leases = leases
        self.slots = slots
        self.index = index
        self.log = log
        self.control: psycopg.Connection[Any] | None = None  # set by the runner
        self.job_conn: psycopg.Connection[Any] | None = None
        self.done: list[tuple[ClaimedJob, Outcome]] = []
        self.done_since = 0.0  # on self.clock
        self.done_since_wall = 0.0  # on time.monotonic
        # Outcomes wait at most this long: flush_seconds, or four times what
        # the last write took when that is longer. With more processes than
        # cores a write waits for a CPU; a fixed 20 ms then meant a write (a
        # commit) per job, more waiting, and a collapse. Both are measured on
        # a clock that stands still while this thread waits for a CPU: at 64
        # processes on 2 cores the wall clock passed 20 ms within a few jobs
        # of 1 ms, and a batch was written in four or five statements.
        self.flush_every = cfg.flush_seconds
        # Opened by the main thread, which records outcomes and runs sync
        # handlers: the executor reads the same clock.
        self.run_queue = RunQueueClock()
        self.clock = self.run_queue.work_time
        # Claimed but never started when the connection was lost: given back
        # (fenced by their lease) once it is back, without counting the attempt.
        self.unstarted: list[ClaimedJob] = []

    # -- the outcome buffer --------------------------------------------------

    def record(self, job: ClaimedJob, outcome: Outcome, in_transaction: bool) -> None:
        """Keeps the outcome for the next flush, or writes it at once within the
        job's own transaction. Raises (a lost connection) only once it is kept."""
        if in_transaction:
            self._finish_in_job_transaction(job, outcome)
        else:
            self._keep(job, outcome)
        if self.done and self._flush_due():
            self.flush()

    def _flush_due(self) -> bool:
        """Whether the oldest outcome kept has waited ``flush_every`` of work time.

        The wall clock is asked first: work time never passes faster than it,
        so the run-queue clock (a read of /proc, several microseconds, which
        per job was a tenth of the worker's time in a drain of no-op jobs) is
        read only once the wall clock says a flush may be due."""
        if time.monotonic() - self.done_since_wall < self.flush_every:
            return False
        return self.clock() - self.done_since >= self.flush_every

    def _keep(self, job: ClaimedJob, outcome: Outcome) -> None:
        if not self.done:
            self.done_since = self.clock()
            self.done_since_wall = time.monotonic()
        self.done.append((job, outcome))

    def flush(self) -> None:
        if not self.done:
            self.slots.written(self.index)
            return
        assert self.control is not None
        done, self.done = self.done, []
        started = self.clock()
        completed = [(j, o) for j, o in done if isinstance(o, Completed)]
        failed = [(j, o) for j, o in done if isinstance(o, Failed)]
        writes = [
            complete_many.bind(completed[start : start + _COMPLETE_CHUNK])
            for start in range(0, len(completed), _COMPLETE_CHUNK)
        ]
        if failed:
            writes.append(fail_many.bind(failed))
        try:
            with passage(self.gate, self.index):
                run_writes(self.control, writes)
        except psycopg.Error:
            self.done = done + self.done  # written after the reconnect, lease permitting
            raise
        self.leases.release(job for job, _ in done)
        self.flush_every = max(self.cfg.flush_seconds, 4 * (self.clock() - started))
        self.slots.written(self.index)

    def give_back(self, jobs: Sequence[ClaimedJob]) -> None:
        """Returns claimed jobs to the queue without counting the attempt."""
        assert self.control is not None
        try:
            return_many(self.control, jobs)
        except psycopg.Error:
            self.unstarted.extend(jobs)  # given back after the reconnect, if there is one
            raise
        self.leases.release(jobs)
        self.log.info("jobs_returned", count=len(jobs))

    def after_reconnect(self) -> None:
        """Writes what the lost connection could not: the outcomes of finished
        jobs and the return of unstarted ones. Both are fenced by the lease, so
        a job rescued meanwhile is left alone."""
        with contextlib.suppress(psycopg.Error):
            self.flush()
            if self.unstarted:
                unstarted, self.unstarted = self.unstarted, []
                try:
                    self.give_back(unstarted)
                except psycopg.Error:
                    self.unstarted = unstarted + self.unstarted
                    raise

    # -- the job's own transaction -------------------------------------------

    def open_job_transaction(self, job: ClaimedJob) -> psycopg.Connection[Any]:
        """``ctx.conn``: a transaction scoped to the job's organization and
        bounded by its timeout, on a session kept for the jobs of this process."""
        timeout_ms = (
            job.timeout_seconds * 1000 + _STATEMENT_TIMEOUT_MARGIN_MS if job.timeout_seconds else 0
        )
        begin = job_transaction_begin.bind(
            organization=job.organization, statement_timeout_ms=timeout_ms
        )
        if self.job_conn is not None and not self.job_conn.closed:
            try:
                run(self.job_conn, begin)
                return self.job_conn
            except psycopg.Error:
                # Lost while idle (a restart, a killed backend, a session left
                # read-only): nothing of this job has run on it yet, so a fresh
                # connection loses nothing.
                self.job_conn.close()
        self.job_conn = connect(self.cfg, "job", autocommit=False, bookkeeping=False)
        self.slots.put(self.index, slot_fields.PID_JOB, self.job_conn.info.backend_pid)
        if direct(self.cfg):
            worker_session_add(self.job_conn, worker=worker_name())
            self.job_conn.commit()
        try:
            run(self.job_conn, begin)
        except psycopg.Error as exc:
            if classify(exc).retry:
                raise  # a database fault, not this job's settings
            raise self._setup_failed(job, exc) from exc
        return self.job_conn

    def _setup_failed(self, job: ClaimedJob, exc: psycopg.Error) -> JobSetupFailed:
        """A setting Postgres refused left the session in an aborted
        transaction: it is closed, so the next job gets a fresh one."""
        self.close()
        message = f"the job's transaction could not be set up: {type(exc).__name__}: {exc}"
        self.log.warning("job_setup_failed", job_id=job.id, error=message)
        return JobSetupFailed(message.strip())

    def _finish_in_job_transaction(self, job: ClaimedJob, outcome: Outcome) -> None:
        """The handler wrote through ctx.conn: its writes commit with the completion,
        and are rolled back if the attempt failed or the lease was lost."""
        conn = self.job_conn
        assert conn is not None
        if isinstance(outcome, Completed):
            try:
                if complete_many(conn, [(job, outcome)]):
                    conn.commit()
                else:
                    with contextlib.suppress(psycopg.Error):
                        conn.rollback()
                    self.log.warning("job_lease_lost", job_id=job.id)
                self.leases.release([job])
                return
            except psycopg.Error as exc:
                # Also when the connection died during the commit, which may or
                # may not have happened: the failure is fenced by the lease, so
                # it changes nothing if the completion did commit.
                outcome = Failed(type(exc).__name__, str(exc), None, False, outcome.duration_ms)
        # The attempt's writes are undone with it; a broken connection has
        # undone them already, and the outcome must be recorded all the same.
        # The session goes too: whatever the failed attempt left on it (a
        # session setting, a temporary table) must not meet the next job.
        with contextlib.suppress(psycopg.Error):
            conn.rollback()
        self.close()
        self._keep(job, outcome)
        self.flush()

    def close(self) -> None:
        if self.job_conn is not None and not self.job_conn.closed:
            with contextlib.suppress(psycopg.Error):
                self.job_conn.close()
        self.job_conn = None
        self.slots.put(self.index, slot_fields.PID_JOB, 0)  # nothing for a kill to stop
