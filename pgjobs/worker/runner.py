"""One worker process: claim a batch, run it, and again.

Runs in a process of its own, started by the supervisor. A job's way through
it: the claim here, :mod:`executor` runs its handler, :mod:`completer` writes
its outcome. Beside the loop, :mod:`beacon` renews the leases of the jobs this
process holds, :mod:`wakeups` sleeps until work comes, and :mod:`maintenance`
vacuums the jobs table when it needs it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import threading
from typing import Any

import psycopg
import structlog

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
from pgjobs.worker.lane import Lane
from pgjobs.worker.maintenance import Vacuum
from pgjobs.worker.session import connect_until_up, worker_name
from pgjobs.worker.slots import Slots
from pgjobs.worker.starting import decode_tolerantly
from pgjobs.worker.wakeups import Wakeups

logger = structlog.get_logger("pgjobs.worker")

# While async jobs are in flight, an idle sleep looks at their outcomes this often.
_BUSY_STEP_SECONDS = 0.01


class Runner:
    def __init__(
        self, cfg: WorkerConfig, index: int, slots: Slots, registry: Registry | None = None
    ) -> None:
        self.cfg = cfg
        self.index = index
        self.slots = slots
        self.name = worker_name()
        self.log = logger.bind(worker=self.name)
        self.stopping = False
        wake = threading.Event()
        self.leases = Leases()
        self.beacon = Beacon(cfg, self.name, self.leases, slots, index, wake)
        self.wakeups = Wakeups(cfg, wake)
        self.completer = Completer(cfg, self.leases, slots, index, self.log)
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
            lambda: self.stopping,
            self.log,
            cfg.batch_size,
            self.lane,
        )
        self.vacuum = Vacuum(self.log, self.name)
        self.control: psycopg.Connection[Any] | None = None

    def serve(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides
        self._connect()
        self.beacon.start()
        if self.lane.hooks:
            self.lane.start()  # the hooks' resources exist before the first job
        try:
            self._loop()
        finally:
            self.beacon.stopped.set()
            self._close()
        self.log.info("worker_stopped")

    def _on_term(self, signum: int, frame: Any) -> None:
        self.stopping = True
        self.wakeups.wake.set()

    def _loop(self) -> None:
        executor = self.executor
        while not self.stopping:
            try:
                self.wakeups.wake.clear()
                executor.collect()
                claimed_for = executor.room()
                jobs = self._claim()
                if jobs:
                    assert self.control is not None
                    self.executor.run_batch(self.control, jobs)  # first: nothing waits on it
                    # Full (more is waiting): no wake-up needed for a while.
                    self.wakeups.after_batch(busy=len(jobs) >= claimed_for)
                    self.vacuum.if_due(self.control)
                    continue
                if self.wakeups.listen(True):
                    continue  # once more, for what came before the LISTEN
                self.completer.flush()
                if self.cfg.exit_when_idle and not executor.in_flight and self._idle_everywhere():
                    return
                step = _BUSY_STEP_SECONDS if executor.in_flight else None
                self.wakeups.sleep_until_due(lambda: self.stopping, step)
            except psycopg.OperationalError as exc:
                self.log.warning("worker_connection_lost", error=str(exc))
                self._reconnect()
        self._finish_in_flight()

    def _finish_in_flight(self) -> None:
        """At SIGTERM: lets the async jobs in flight end (the supervisor kills
        the process at the grace's end, and their jobs go back uncounted)."""
        while self.executor.in_flight:
            try:
                self.wakeups.wake.wait(self.cfg.flush_seconds)
                self.wakeups.wake.clear()
                self.executor.collect()
                self.completer.flush()
            except psycopg.OperationalError as exc:
                self.log.warning("worker_connection_lost", error=str(exc))
                self._reconnect()

    def _claim(self) -> list[ClaimedJob]:
        assert self.control is not None
        jobs = claim(
            self.control,
            worker=self.name,
            queues=self.cfg.queues,
            n=self.executor.room(),
            lease_seconds=self.cfg.lease_seconds,
            job_types=self.job_types,
        )
        self.leases.hold(jobs)
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
            stop=lambda: self.stopping,
            setup=self._register,
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

    def _reconnect(self) -> None:
        """After a lost connection (Postgres restarted, a backend killed): connect
        again with backoff, then write what the lost connection could not."""
        if self.control is not None:
            self.control.close()
        self.completer.close()
        self._connect()
        self.completer.after_reconnect()

    def _close(self) -> None:
        self.completer.close()
        if self.control is not None and not self.control.closed:
            with contextlib.suppress(psycopg.Error):
                worker_unregister(self.control, worker=self.name)
                self.control.close()


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
        Runner(cfg, index, Slots(cfg.processes, array, cfg.concurrency), registry).serve()
    except BaseException:
        logger.exception("worker_process_failed")
        code = 1
    finally:
        leave(code)
