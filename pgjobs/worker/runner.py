"""One worker process: claim a batch, run each job, write the outcomes in bulk.

Runs in a process of its own, started by the supervisor. The main thread
LISTENs for wake-ups on the connection it claims with, so a notification wakes
the one session that claims next, and only while it has nothing to do: every
LISTENing session reads every notification of its database, and a busy queue
sends one per state change. A beacon thread renews the leases of the jobs this
process holds, so a process that stops (SIGSTOP, kill -9, a lost host) stops
renewing and the rescuer gives its jobs to someone else. Every write is fenced
by the claim's lease token.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import signal
import socket
import threading
import time
from typing import Any

import psycopg
import structlog

from pgjobs import log as pgjobs_log
from pgjobs import sql
from pgjobs.context import ClaimedJob, JobContext
from pgjobs.registry import Registry, current
from pgjobs.worker import slots as slot_fields
from pgjobs.worker.child import become_child, leave
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.executor import (
    Completed,
    Failed,
    Outcome,
    completion_params,
    execute,
    failure_params,
    handler_for,
)
from pgjobs.worker.slots import Slots

logger = structlog.get_logger("pgjobs.worker")

_TARGET_BATCH_SECONDS = 0.05  # claim about this much work at a time
_RECONNECT_FIRST_SECONDS = 0.1
_RECONNECT_MAX_SECONDS = 5.0
# A job's statements may outlive its timeout by this much: the supervisor's kill
# is what enforces the timeout (and records it as one); the statement timeout is
# only the backstop for a supervisor that is not there to kill.
_STATEMENT_TIMEOUT_MARGIN_MS = 1000
# Claimed jobs leave dead entries at the head of the claim's index, which every
# claim steps over until VACUUM removes them: a busy queue decays without it.
# Workers that may vacuum (the table's owner, a superuser) do so when this many
# have piled up, checked this often, one worker at a time (advisory lock).
_VACUUM_CHECK_SECONDS = 1.0
_VACUUM_DEAD_TUPLES = 10_000
_VACUUM_DEAD_SHARE = 0.05  # of the live tuples, when that is more
_VACUUM_LOCK_KEY = 0x70676A6F6276  # "pgjobv"
# Completions are written this many at a time at most: job_complete_many looks
# each row's values up by position in its arrays, which costs the square of
# the batch (nothing at the default batch of 100, a lot at 10,000).
_COMPLETE_CHUNK = 500


def worker_name(pid: int | None = None) -> str:
    return f"{socket.gethostname()}/{pid or os.getpid()}"


def connect(
    cfg: WorkerConfig, purpose: str, *, autocommit: bool = True, bookkeeping: bool = True
) -> psycopg.Connection:
    """A worker session. Bookkeeping sessions (claims, completions, heartbeats,
    rescues) commit asynchronously: a database crash may forget their last
    fraction of a second, which puts those jobs back to run again (at least
    once), never loses one, and spares every batch a wait for the disk. A job's
    own transaction (``bookkeeping=False``) commits as the server says, since
    it carries the handler's writes. Bookkeeping sessions also turn JIT off:
    once the jobs table is large, the planner's cost estimates pass the JIT
    threshold and short statements spend milliseconds being compiled (two
    fifths of the workers' database time in a long sustained run)."""
    conn = psycopg.connect(cfg.dsn, autocommit=autocommit)
    timeout_ms = str(int(cfg.statement_timeout_seconds * 1000))
    conn.execute(
        sql.query("session_configure"),
        {
            "statement_timeout": timeout_ms,
            "idle_timeout": timeout_ms,
            "application_name": f"pgjobs {purpose} {os.getpid()}",
            "synchronous_commit": "off" if bookkeeping else None,
            "jit": "off" if bookkeeping else None,
        },
    )
    if not autocommit:
        conn.commit()
    return conn


class Beacon(threading.Thread):
    """The heartbeat that renews this process's leases."""

    def __init__(self, runner: Runner) -> None:
        super().__init__(name="pgjobs-beacon", daemon=True)
        self.runner = runner
        self.stopped = threading.Event()

    def run(self) -> None:
        self.delay = _RECONNECT_FIRST_SECONDS
        while not self.stopped.is_set():
            try:
                self._serve()
            except psycopg.Error as exc:
                logger.warning(
                    "beacon_reconnect", error=str(exc), worker=self.runner.name, retry_in=self.delay
                )
                self.runner.wake.set()
                self.stopped.wait(self.delay)
                self.delay = min(self.delay * 2, _RECONNECT_MAX_SECONDS)

    def _serve(self) -> None:
        runner = self.runner
        cfg = runner.cfg
        with connect(cfg, "beacon") as conn:
            self.delay = _RECONNECT_FIRST_SECONDS  # a later loss starts its backoff afresh
            runner.slots.put(runner.index, slot_fields.PID_BEACON, conn.info.backend_pid)
            while not self.stopped.is_set():
                self._renew(conn)
                self.stopped.wait(cfg.heartbeat_seconds)

    def _renew(self, conn: psycopg.Connection) -> None:
        runner = self.runner
        conn.execute(
            sql.query("lease_renew"),
            {
                "worker": runner.name,
                "ids": list(runner.held),
                "lease_seconds": runner.cfg.lease_seconds,
            },
        )


class Runner:
    def __init__(
        self, cfg: WorkerConfig, index: int, slots: Slots, registry: Registry | None = None
    ) -> None:
        self.cfg = cfg
        self.registry = registry or current()
        self.index = index
        self.slots = slots
        self.name = worker_name()
        self.log = logger.bind(worker=self.name)
        self.stopping = False
        self.wake = threading.Event()
        self.held: dict[int, int] = {}  # job id -> lease token, renewed by the beacon
        self.done: list[tuple[ClaimedJob, Outcome]] = []
        # Claimed but never started when the connection was lost: given back
        # (fenced by their lease) once it is back, without counting the attempt.
        self.unstarted: list[ClaimedJob] = []
        self.done_since = 0.0
        self.batch_size = 1  # grows once jobs prove short
        self.avg_seconds = 0.0
        self.handlers: dict[str, str] = {}
        self.control: psycopg.Connection | None = None
        self.listening = False  # LISTEN pgjobs_wakeup on self.control
        self.job_conn: psycopg.Connection | None = None
        self.next_vacuum_check = time.monotonic() + _VACUUM_CHECK_SECONDS

    # -- lifecycle ---------------------------------------------------------

    def serve(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides
        beacon = Beacon(self)
        self._connect()
        beacon.start()
        try:
            self._loop()
        finally:
            beacon.stopped.set()
            self._close()
        self.log.info("worker_stopped")

    def _on_term(self, signum: int, frame: Any) -> None:
        self.stopping = True
        self.wake.set()

    def _connect(self) -> None:
        delay = _RECONNECT_FIRST_SECONDS
        while True:
            try:
                self.control = connect(self.cfg, "worker")
                self.slots.put(self.index, slot_fields.PID_CONTROL, self.control.info.backend_pid)
                self.listening = False
                self.control.execute(
                    sql.query("worker_register"),
                    {
                        "worker": self.name,
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "queues": list(self.cfg.queues),
                    },
                )
                return
            except psycopg.OperationalError as exc:
                if self.stopping:
                    raise
                self.log.warning("worker_reconnect", error=str(exc), retry_in=delay)
                time.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX_SECONDS)

    def _close(self) -> None:
        for conn in (self.job_conn, self.control):
            if conn is None or conn.closed:
                continue
            try:
                if conn is self.control:
                    conn.execute(sql.query("worker_unregister"), {"worker": self.name})
                conn.close()
            except psycopg.Error:
                pass

    def _loop(self) -> None:
        while not self.stopping:
            try:
                self.wake.clear()
                jobs = self._claim()
                if jobs:
                    busy = len(jobs) >= self.cfg.batch_size
                    self._run_batch(jobs)  # first: a wake-up waits on nothing here
                    if self.listening and self.control is not None:
                        self._forget_wakeups(self.control)
                    if busy:  # more is waiting: no wake-up needed for a while
                        self._listen(False)
                    self._vacuum_if_due()
                    continue
                if self._listen(True):
                    continue  # once more, for what came before the LISTEN
                self._flush()
                if self.cfg.exit_when_idle and self._idle_everywhere():
                    return
                self._sleep_until_due()
            except psycopg.OperationalError as exc:
                self.log.warning("worker_connection_lost", error=str(exc))
                self._reconnect()

    def _vacuum_if_due(self) -> None:
        now = time.monotonic()
        if now < self.next_vacuum_check:
            return
        self.next_vacuum_check = now + _VACUUM_CHECK_SECONDS
        assert self.control is not None
        params = {
            "key": _VACUUM_LOCK_KEY,
            "threshold": _VACUUM_DEAD_TUPLES,
            "scale": _VACUUM_DEAD_SHARE,
        }
        row = self.control.execute(sql.query("jobs_vacuum_lock"), params).fetchone()
        if row is None or not row[0]:
            return
        try:
            started = time.monotonic()
            self.control.execute("vacuum pgjobs.jobs")
            self.log.info("jobs_vacuumed", seconds=round(time.monotonic() - started, 3))
        except psycopg.errors.QueryCanceled as exc:  # statement_timeout: the next one goes on
            self.log.warning("jobs_vacuum_canceled", error=str(exc))
        finally:
            self.control.execute(sql.query("jobs_vacuum_unlock"), params)

    def _reconnect(self) -> None:
        """After a lost connection (Postgres restarted, a backend killed): connect
        again with backoff, then write what the lost connection could not: the
        outcomes of finished jobs and the return of unstarted ones. Both are
        fenced by the lease, so a job rescued meanwhile is left alone. Until they
        are written the beacon keeps their leases, so nothing is rescued twice."""
        for conn in (self.control, self.job_conn):
            if conn is not None:
                conn.close()
        self.job_conn = None
        self._connect()
        with contextlib.suppress(psycopg.OperationalError):
            self._flush()
            if self.unstarted:
                unstarted, self.unstarted = self.unstarted, []
                try:
                    self._give_back(unstarted)
                except psycopg.OperationalError:
                    self.unstarted = unstarted + self.unstarted
                    raise

    # -- claiming ----------------------------------------------------------

    def _claim(self) -> list[ClaimedJob]:
        assert self.control is not None
        rows = self.control.execute(
            sql.query("job_claim"),
            {
                "worker": self.name,
                "queues": list(self.cfg.queues),
                "n": self.batch_size,
                "lease_seconds": self.cfg.lease_seconds,
                "now": None,
            },
        ).fetchall()
        jobs = [ClaimedJob(*row) for row in rows]
        for job in jobs:
            self.held[job.id] = job.lease_token
        return jobs

    def _sleep_until_due(self) -> None:
        """Until a wake-up for one of our queues, the next delayed job's time,
        or the poll; in steps of at most 0.25 s, so that SIGTERM is seen."""
        control = self.control
        assert control is not None
        row = control.execute(
            sql.query("job_next_run_at_seconds"), {"queues": list(self.cfg.queues)}
        ).fetchone()
        wait = self.cfg.poll_seconds
        if row and row[0] is not None:
            wait = max(0.0, min(wait, float(row[0])))
        deadline = time.monotonic() + wait
        while not self.stopping and not self.wake.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not self.listening:
                self.wake.wait(min(left, 0.25))
            elif self._woken(control, min(left, 0.25)):
                break

    def _listen(self, on: bool) -> bool:
        """LISTEN (or UNLISTEN) for wake-ups, unless already so or polling
        only; whether it changed anything."""
        if on == self.listening or not self.cfg.listen:
            return False
        assert self.control is not None
        self.control.execute("listen pgjobs_wakeup" if on else "unlisten pgjobs_wakeup")
        self.listening = on
        return True

    def _woken(self, control: psycopg.Connection, timeout: float) -> bool:
        """Whether a wake-up for one of our queues comes within ``timeout``
        seconds (the claim that follows drops any others already here)."""
        notes = control.notifies(timeout=timeout)
        woken = any(note.payload in self.cfg.queues for note in notes)
        notes.close()  # it holds the connection's lock until closed
        return woken

    def _forget_wakeups(self, control: psycopg.Connection) -> None:
        """Drops the wake-ups that came while the connection was busy (psycopg
        keeps them): the claim that follows a batch answers them all."""
        for _ in control.notifies(timeout=0):
            pass

    def _idle_everywhere(self) -> bool:
        assert self.control is not None
        row = self.control.execute(
            sql.query("job_active_count"), {"queues": list(self.cfg.queues)}
        ).fetchone()
        return row is not None and row[0] == 0

    # -- running -----------------------------------------------------------

    def _run_batch(self, jobs: list[ClaimedJob]) -> None:
        started = time.monotonic()
        for position, job in enumerate(jobs):
            if self.stopping:
                self._give_back(jobs[position:])
                break
            if self.control is None or self.control.closed:
                # Lost while the previous job ran: starting the next one would
                # only spend its attempt on the outage.
                self.unstarted.extend(jobs[position:])
                raise psycopg.OperationalError("the connection is lost")
            try:
                self._run_one(job)  # raises only once the job's outcome is kept in self.done
                if self.done and time.monotonic() - self.done_since >= self.cfg.flush_seconds:
                    self._flush()
            except psycopg.OperationalError:
                self.unstarted.extend(jobs[position + 1 :])
                raise
        self._flush()
        self._adapt(len(jobs), time.monotonic() - started)

    def _adapt(self, count: int, seconds: float) -> None:
        per_job = seconds / max(count, 1)
        self.avg_seconds = (
            per_job if not self.avg_seconds else 0.7 * self.avg_seconds + 0.3 * per_job
        )
        fit = math.ceil(_TARGET_BATCH_SECONDS / max(self.avg_seconds, 1e-6))
        self.batch_size = max(1, min(self.cfg.batch_size, fit, self.batch_size * 4))

    def _run_one(self, job: ClaimedJob) -> None:
        assert self.control is not None
        ctx = JobContext(
            job,
            self.control,
            lambda: self._open_job_transaction(job),
            lambda: self.slots.cancel_requested(self.index, job.id),
            worker=self.name,
        )
        self.slots.start(self.index, job.id, job.lease_token, job.timeout_seconds)
        started = time.monotonic()
        try:
            fn = handler_for(job.job_type, self._handler_path(job.job_type), self.registry)
            outcome = execute(fn, ctx)
        except Exception as exc:  # no handler: retry policy, another worker may have it
            outcome = Failed(type(exc).__name__, str(exc), None, False, 0.0)
        finally:
            self.slots.finish(self.index)
        if (
            isinstance(outcome, Failed)
            and outcome.error_class != "canceled"
            and job.timeout_seconds
            and time.monotonic() - started >= job.timeout_seconds
        ):
            # Failed past its deadline (a statement timeout, say) before the kill came.
            outcome = Failed(
                "timeout",
                f"the job exceeded its timeout: {outcome.message}",
                outcome.traceback,
                False,
                outcome.duration_ms,
            )
        self._log_outcome(job, outcome)
        if ctx.transaction_open:
            self._finish_in_job_transaction(job, outcome)
        else:
            if not self.done:
                self.done_since = time.monotonic()
            self.done.append((job, outcome))

    def _handler_path(self, job_type: str) -> str | None:
        if job_type not in self.handlers:
            assert self.control is not None
            self.handlers = dict(self.control.execute(sql.query("job_type_handlers")).fetchall())
        return self.handlers.get(job_type)

    def _open_job_transaction(self, job: ClaimedJob) -> psycopg.Connection:
        timeout_ms = (
            job.timeout_seconds * 1000 + _STATEMENT_TIMEOUT_MARGIN_MS if job.timeout_seconds else 0
        )
        params = {"organization": job.organization or "", "statement_timeout": str(timeout_ms)}
        if self.job_conn is not None and not self.job_conn.closed:
            try:
                self.job_conn.execute(sql.query("job_transaction_begin"), params)
                return self.job_conn
            except psycopg.OperationalError:
                # Lost while idle (a restart, a killed backend): nothing of this
                # job has run on it yet, so a fresh connection loses nothing.
                self.job_conn.close()
        self.job_conn = connect(self.cfg, "job", autocommit=False, bookkeeping=False)
        self.slots.put(self.index, slot_fields.PID_JOB, self.job_conn.info.backend_pid)
        self.job_conn.execute(sql.query("job_transaction_begin"), params)
        return self.job_conn

    def _finish_in_job_transaction(self, job: ClaimedJob, outcome: Outcome) -> None:
        """The handler wrote through ctx.conn: its writes commit with the completion,
        and are rolled back if the attempt failed or the lease was lost."""
        conn = self.job_conn
        assert conn is not None
        if isinstance(outcome, Completed):
            try:
                rows = conn.execute(
                    sql.query("job_complete_many"), completion_params([(job, outcome)])
                )
                if rows.fetchall():
                    conn.commit()
                    self.held.pop(job.id, None)
                    return
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
                self.held.pop(job.id, None)
                self.log.warning("job_lease_lost", job_id=job.id)
                return
            except psycopg.Error as exc:
                # Also when the connection died during the commit, which may or
                # may not have happened: the failure is fenced by the lease, so
                # it changes nothing if the completion did commit.
                outcome = Failed(type(exc).__name__, str(exc), None, False, outcome.duration_ms)
        # The attempt's writes are undone with it; a broken connection has
        # undone them already, and the outcome must be recorded all the same.
        with contextlib.suppress(psycopg.Error):
            conn.rollback()
        if not self.done:
            self.done_since = time.monotonic()
        self.done.append((job, outcome))
        self._flush()

    def _flush(self) -> None:
        if not self.done:
            return
        assert self.control is not None
        done, self.done = self.done, []
        completed = [(j, o) for j, o in done if isinstance(o, Completed)]
        failed = [(j, o) for j, o in done if isinstance(o, Failed)]
        try:
            with self.control.pipeline():
                for start in range(0, len(completed), _COMPLETE_CHUNK):
                    self.control.execute(
                        sql.query("job_complete_many"),
                        completion_params(completed[start : start + _COMPLETE_CHUNK]),
                    )
                if failed:
                    self.control.execute(sql.query("job_fail_many"), failure_params(failed))
        except psycopg.OperationalError:
            self.done = done + self.done  # written after the reconnect, lease permitting
            raise
        for job, _ in done:
            self.held.pop(job.id, None)

    def _give_back(self, jobs: list[ClaimedJob]) -> None:
        assert self.control is not None
        self.control.execute(
            sql.query("job_return_many"),
            {"ids": [j.id for j in jobs], "tokens": [j.lease_token for j in jobs]},
        )
        for job in jobs:
            self.held.pop(job.id, None)
        self.log.info("jobs_returned", count=len(jobs))

    def _log_outcome(self, job: ClaimedJob, outcome: Outcome) -> None:
        if isinstance(outcome, Completed) and not pgjobs_log.enabled(logging.DEBUG):
            return  # the common case, at no cost
        keys = {
            "job_id": job.id,
            "job_type": job.job_type,
            "organization": job.organization,
            "attempt": job.attempt,
        }
        if isinstance(outcome, Completed):
            self.log.debug("job_completed", duration_ms=round(outcome.duration_ms, 3), **keys)
        else:
            self.log.info(
                "job_failed",
                error_class=outcome.error_class,
                error=outcome.message,
                permanent=outcome.permanent,
                **keys,
            )


def child_main(
    cfg: WorkerConfig,
    index: int,
    array: Any,
    log_json: bool | None,
    log_level: str,
    registry: Registry | None = None,
) -> None:
    """Entry point of a forked worker process. It leaves by os._exit so that
    nothing inherited from the supervisor (its connection above all) is finalized."""
    code = 0
    try:
        become_child(log_json, log_level)
        for module in cfg.imports:
            importlib.import_module(module)
        Runner(cfg, index, Slots(cfg.processes, array), registry).serve()
    except BaseException:
        logger.exception("worker_process_failed")
        code = 1
    finally:
        leave(code)
