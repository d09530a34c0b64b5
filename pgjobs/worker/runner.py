"""One worker process: claim a batch, run it, and again.

Runs in a process of its own, started by the supervisor. A job's way through
it: the claim here, :mod:`executor` runs its handler, :mod:`completer` writes
its outcome. Beside the loop, :mod:`beacon` renews the leases of the jobs this
process holds, :mod:`wakeups` sleeps until work comes, and :mod:`maintenance`
vacuums the unfinished jobs when they need it and makes the partitions of
finished jobs ahead of time.

A database fault (see :mod:`pgjobs.faults`) drops the sessions, waits with a
backoff that only work done resets, and connects again; the loop goes on as
soon as the fault clears. A fault that waiting does not clear ends the process
with :data:`EXIT_FATAL`, on which the supervisor stops the whole worker. The
process stops, as on SIGTERM, once its supervisor is gone.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import threading
import time
from typing import Any

import psycopg
import structlog

from pgjobs.faults import Fatal, Retry, retry_moved
from pgjobs.registry import Registry, current
from pgjobs.statements import ClaimedJob
from pgjobs.statements.claim import claim, none_active
from pgjobs.statements.leases import worker_register, worker_unregister
from pgjobs.worker import slots as slot_fields
from pgjobs.worker.beacon import Beacon, Leases
from pgjobs.worker.child import become_child, leave
from pgjobs.worker.completer import Completer
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.executor import Executor
from pgjobs.worker.gate import Gate, passage
from pgjobs.worker.lane import Lane
from pgjobs.worker.maintenance import Partitions, Vacuum
from pgjobs.worker.session import connect, connect_until_up, worker_name
from pgjobs.worker.slots import Slots
from pgjobs.worker.starting import decode_tolerantly
from pgjobs.worker.wakeups import Doorbell, Wakeups

logger = structlog.get_logger("pgjobs.worker")

EXIT_FATAL = 3  # a database error that waiting does not clear: stop the whole worker
_PAUSE_STEP_SECONDS = 0.1
_LAST_CHANCE_SECONDS = 2.0
# While async jobs are in flight, an idle sleep looks at their outcomes this often.
_BUSY_STEP_SECONDS = 0.01


class Runner:
    def __init__(
        self,
        cfg: WorkerConfig,
        index: int,
        slots: Slots,
        registry: Registry | None = None,
        doorbell: Doorbell | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.cfg = cfg
        self.gate = gate
        self.index = index
        self.slots = slots
        self.name = worker_name()
        self.log = logger.bind(worker=self.name)
        self.stopping = False
        self.parent = os.getppid()
        self.retry = Retry()  # the fault under way, if any: its backoff outlives reconnects
        wake = threading.Event()
        self.leases = Leases()
        self.beacon = Beacon(cfg, self.name, self.leases, slots, index, wake)
        self.wakeups = Wakeups(cfg, wake, doorbell, slots, index)
        self.completer = Completer(cfg, self.leases, slots, index, self.log, gate)
        types = registry or current()
        self.lane = Lane(cfg, slots, index, wake, self.name, types.start_hooks())
        # What this process can run is what it registered: the claim takes no
        # other type, whatever job_types.handler says (a record, never imported).
        self.job_types = sorted(types.registered())
        self.wakeups.job_types = self.job_types
        self.executor = Executor(
            types,
            self.completer,
            slots,
            index,
            self.name,
            self._stopping,
            self.log,
            cfg.batch_size,
            self.lane,
        )
        self.vacuum = Vacuum(self.log, self.name, processes=cfg.processes)
        self.partitions = Partitions(self.log)
        self.control: psycopg.Connection[Any] | None = None

    def serve(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides
        try:
            self._connect()
        except psycopg.Error:
            if not self._stopping():
                raise
            return  # stopped before the database came back: nothing was claimed
        self.beacon.start()
        if self.lane.hooks:
            self.lane.start()  # the hooks' resources exist before the first job
        try:
            self._loop()
        finally:
            self.wakeups.release()
            self.beacon.stopped.set()
            self._close()
        self.log.info("worker_stopped")

    def _on_term(self, signum: int, frame: Any) -> None:
        self.stopping = True
        self.wakeups.wake.set()

    def _stopping(self) -> bool:
        """SIGTERM came, or the supervisor is gone (the parent-death signal's
        fallback: a process adopted by init has another parent)."""
        if not self.stopping and os.getppid() != self.parent:
            self.log.warning("supervisor_gone", supervisor_pid=self.parent)
            self.stopping = True
        return self.stopping

    def _loop(self) -> None:
        while not self._stopping():
            try:
                if self._step():
                    return
            except psycopg.Error as exc:
                self._recover(exc)
        self._finish_in_flight()

    def _step(self) -> bool:
        """One claim and what follows it; True once idle with --exit-when-idle."""
        assert self.control is not None
        if self.beacon.failed is not None:
            raise self.beacon.failed
        executor = self.executor
        self.wakeups.wake.clear()
        executor.collect()
        self.partitions.if_due(self.control)
        claimed_for = executor.room()
        jobs = self._claim()
        if jobs:
            # A sibling listens meanwhile; one more is rung if more is waiting.
            self.wakeups.claimed(full=len(jobs) >= claimed_for)
            executor.run_batch(self.control, jobs)
            self.wakeups.after_batch()
            self.vacuum.if_due(self.control)
            return False
        executor.batch.emptied()
        if self.wakeups.idle():
            return False  # once more, for what came before the LISTEN
        self.completer.flush()
        if self.cfg.exit_when_idle and not executor.in_flight and self._idle_everywhere():
            return True
        step = _BUSY_STEP_SECONDS if executor.in_flight else None
        self.wakeups.sleep_until_due(self._stopping, step)
        return False

    def _finish_in_flight(self) -> None:
        """At SIGTERM: lets the async jobs in flight end (the supervisor kills
        the process at the grace's end, and their jobs go back uncounted). A
        fault meanwhile leaves them to their leases (:meth:`_close` tries once
        more to write what is held)."""
        while self.executor.in_flight:
            try:
                self.wakeups.wake.wait(self.cfg.flush_seconds)
                self.wakeups.wake.clear()
                self.executor.collect()
                self.completer.flush()
            except psycopg.Error as exc:
                self._recover(exc)  # stopping: the sessions go, none is made again
                return

    def _recover(self, exc: psycopg.Error) -> None:
        """A fault: drop the sessions, wait out the backoff, connect again and
        write what the lost session could not. Raises :class:`Fatal` for an
        error that waiting does not clear; returns early on SIGTERM."""
        fault, delay = self.retry.delay(exc)
        self.log.warning(
            "worker_database_fault", error=fault.message, sqlstate=fault.sqlstate, retry_in=delay
        )
        self._drop_sessions()
        self.wakeups.release()  # a sibling listens while this one waits
        self._pause(delay)
        if self._stopping():
            return
        try:
            self._connect()
        except psycopg.Error:
            if self._stopping():
                return  # SIGTERM while the database is away: leave, the leases remain
            raise
        self.completer.after_reconnect()

    def _pause(self, seconds: float) -> None:
        """Sleeps, in steps that see SIGTERM and the supervisor's end."""
        deadline = time.monotonic() + seconds
        while not self._stopping() and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, _PAUSE_STEP_SECONDS))

    def _claim(self) -> list[ClaimedJob]:
        control = self.control
        assert control is not None
        with passage(self.gate, self.index):  # the write and the claim in one turn
            self.completer.flush()  # outcomes a fault held back go first
            # A job this claim saw queued may move to jobs_finished before it
            # locks it (canceled, or claimed and finished by another process).
            jobs = retry_moved(lambda: claim(
                control,
                worker=self.name,
                queues=self.cfg.queues,
                n=self.executor.room(),
                lease_seconds=self.cfg.lease_seconds,
                job_types=self.job_types,
            ))
        self.leases.hold(jobs)
        self.retry.ok()
        return jobs

    def _idle_everywhere(self) -> bool:
        assert self.control is not None
        return none_active(self.control, queues=self.cfg.queues, job_types=self.job_types)

    # -- the session ---------------------------------------------------------

    def _connect(self) -> None:
        self.control = connect_until_up(
            self.cfg,
            "worker",
            log=self.log,
            event="worker_reconnect",
            stop=self._stopping,
            setup=self._register,
            wait=self._pause,
            retry=self.retry,
        )
        self.wakeups.attach(self.control)
        self.completer.control = self.control

    def _register(self, conn: psycopg.Connection[Any]) -> None:
        self.slots.put(self.index, slot_fields.PID_CONTROL, conn.info.backend_pid)
        decode_tolerantly(conn)  # a payload it cannot read fails its job, not the process
        worker_register(
            conn,
            worker=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self.cfg.queues,
            job_types=self.job_types,
        )

    def _drop_sessions(self) -> None:
        if self.control is not None:
            with contextlib.suppress(psycopg.Error):
                self.control.close()
        self.completer.close()

    def _close(self) -> None:
        if self.completer.done or self.completer.unstarted:
            self._last_chance()
        self.completer.close()
        if self.control is not None and not self.control.closed:
            with contextlib.suppress(psycopg.Error):
                worker_unregister(self.control, worker=self.name)
                self.control.close()

    def _last_chance(self) -> None:
        """Stopping with outcomes or returns a fault held back: one short try
        on a fresh session, so that the lease rescue need not count them."""
        with contextlib.suppress(psycopg.Error):
            if self.control is None or self.control.closed:
                self.control = connect(self.cfg, "worker", timeout_seconds=_LAST_CHANCE_SECONDS)
                self.completer.control = self.control
            self.completer.after_reconnect()


def child_main(
    cfg: WorkerConfig,
    index: int,
    array: Any,
    log_json: bool | None,
    log_level: str,
    registry: Registry | None = None,
    doorbell: Doorbell | None = None,
    gate: Gate | None = None,
) -> None:
    """Entry point of a forked worker process. It leaves by os._exit so that
    nothing inherited from the supervisor (its connection above all) is finalized."""
    code = 0
    try:
        become_child(log_json, log_level, on_parent_death=signal.SIGTERM)
        for module in cfg.imports:
            importlib.import_module(module)
        slots = Slots(cfg.processes, array, cfg.concurrency)
        Runner(cfg, index, slots, registry, doorbell, gate).serve()
    except Fatal as exc:
        logger.error("worker_stopped_on_fault", error=str(exc), sqlstate=exc.fault.sqlstate)
        code = EXIT_FATAL
    except BaseException:
        logger.exception("worker_process_failed")
        code = 1
    finally:
        leave(code)
