"""The supervisor: starts N worker processes and keeps them honest.

Its loop ticks every 50 ms: it reads cancel requests (by LISTEN, or behind a
pooler by polling the running jobs' rows), kills processes whose job ran past
its timeout or cancel grace (:mod:`timeouts`), replaces processes that died,
has the rescuer settle what they left and rescue expired leases (:mod:`rescuer`),
and keeps the metrics exporter and the pruner going. On SIGTERM it drives a
graceful shutdown; a second signal forces it.

It never outlives its own failure: an unexpected error stops its processes and
ends it non-zero, for a process manager to start a whole worker again; so does a
worker process stopped by a database error that waiting does not clear
(:data:`EXIT_FATAL`). A fault that clears never blocks the tick: while the
database is away the loop watches signals and processes, and tries a session
again when its backoff says.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import multiprocessing.context
import signal
import time
from typing import Any

import psycopg
import structlog

from pgjobs import log as pgjobs_log
from pgjobs.faults import Fatal, Retry
from pgjobs.registry import Registry, current
from pgjobs.schedules.fire import Firer
from pgjobs.statements.sessions import cancel_listen
from pgjobs.worker import slots as slot_fields
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.exporter import Exporter
from pgjobs.worker.gate import Gate, width_for
from pgjobs.worker.maintenance import Pruner
from pgjobs.worker.relay import StateRelay
from pgjobs.worker.rescuer import Rescuer, ended
from pgjobs.worker.runner import EXIT_FATAL, child_main
from pgjobs.worker.session import connect, connect_until_up, resolve, worker_name
from pgjobs.worker.slots import Slots
from pgjobs.worker.timeouts import Enforcer, Overdue
from pgjobs.worker.wakeups import Doorbell

logger = structlog.get_logger("pgjobs.supervisor")

_TICK_SECONDS = 0.05
_CRASH_BACKOFF_SECONDS = 1.0
EXIT_FAILED = 1
Process = multiprocessing.context.ForkProcess


class Supervisor:
    def __init__(
        self,
        cfg: WorkerConfig,
        log_json: bool | None = None,
        log_level: str = "info",
        registry: Registry | None = None,
    ) -> None:
        self.cfg = cfg = resolve(cfg)  # pooler mode decided once, for every process
        self.registry = registry or current()
        self.log_json = log_json
        self.log_level = log_level
        # fork: workers inherit the imported handlers and start in milliseconds.
        # The supervisor holds no threads, and a child never touches (or closes)
        # the connection it inherits: it leaves by os._exit.
        self.mp = multiprocessing.get_context("fork")
        self.slots = Slots(
            cfg.processes,
            self.mp.RawArray("q", slot_fields.size(cfg.processes, cfg.concurrency, cfg.batch_size)),
            cfg.concurrency,
        )
        self.doorbell = Doorbell(self.mp)  # which idle process listens (wakeups.py)
        # How many processes claim or write at once (gate.py); none for few.
        width = width_for(cfg.processes)
        self.gate = Gate(width) if width else None
        self.children: list[Process | None] = [None] * cfg.processes
        self.started_at: list[float] = [0.0] * cfg.processes
        self.signals = 0
        self.stop_deadline: float | None = None
        self.exit_code = 0  # what a graceful shutdown ends with
        self.retry = Retry()  # the database fault under way, if any
        self.reconnect_at = 0.0
        self.log = logger.bind(worker=worker_name())
        self.enforcer = Enforcer(cfg, self.slots, self.log)
        self.rescuer = Rescuer(cfg, self.slots, self.log)
        self.exporter: Exporter | None = None
        self.pruner = Pruner(cfg, self.mp, worker_name(), log_json, log_level)
        self.schedules = Firer()  # fires due periodic jobs (pgjobs/schedules/fire.py)
        self.relay = StateRelay()  # sends the state events of the worker's sessions

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for module in self.cfg.imports:
            importlib.import_module(module)  # before the fork: workers inherit handlers
        try:
            if not self._start_session():
                return 0  # stopped before the database came
            if self.cfg.metrics_port is not None:
                self.exporter = Exporter(self.cfg, self.mp, self.log, self.log_json, self.log_level)
            for index in range(self.cfg.processes):
                self._spawn(index)
            job_types = sorted(self.registry.registered())
            self.log.info(
                "worker_started",
                processes=self.cfg.processes,
                queues=list(self.cfg.queues),
                pooler=self.cfg.pooler,
                job_types=job_types,
            )
            if not job_types:
                self.log.warning("worker_has_no_job_types", hint="--import the handlers' module")
            return self._loop()
        except Fatal as exc:
            self.log.error("worker_stopped_on_fault", error=str(exc), sqlstate=exc.fault.sqlstate)
            self._stop_children()
            return EXIT_FATAL
        except BaseException:
            if all(proc is None for proc in self.children):
                raise  # a setup error (a metrics port in use...): nothing runs yet
            self.log.exception("worker_failed")
            self._stop_children()
            return EXIT_FAILED
        finally:
            self._stop_services()
            if self.gate is not None:
                self.gate.close()
            self.rescuer.release()
            if self.rescuer.conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self.relay.step(self.rescuer.conn)  # the stopped processes' last events
                self.rescuer.conn.close()

    def _start_session(self) -> bool:
        """The supervisor's session and the job types written, with backoff
        while the database is away or read-only; False if a signal came first."""

        def setup(conn: psycopg.Connection[Any]) -> None:
            self._listen(conn)
            self.registry.sync(conn)

        try:
            self.rescuer.conn = connect_until_up(
                self.cfg,
                "supervisor",
                log=self.log,
                event="supervisor_reconnect",
                stop=lambda: bool(self.signals),
                setup=setup,
                wait=self._pause,
            )
        except psycopg.Error:
            if self.signals:
                return False
            raise
        return True

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.signals and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, _TICK_SECONDS))

    def _loop(self) -> int:
        while True:
            if self.signals >= 2:
                self._kill_all()
                self.log.warning("worker_forced_exit")
                return 1
            if self.signals == 1 and self.stop_deadline is None:
                self._begin_shutdown()
            if self.stop_deadline is not None and self._shutdown_step():
                return self.exit_code
            if self.cfg.exit_when_idle and self._all_exited() and not self.pruner.running:
                return 0
            if self.stop_deadline is None:
                if self.exporter is not None:
                    self.exporter.keep()
                self.pruner.keep()
            self._tick()

    def _tick(self) -> None:
        """One round of the database work; a fault ends the round, drops the
        session and sets when to try again (:class:`Fatal` propagates)."""
        if self.rescuer.conn is None and not self._reconnect():
            time.sleep(_TICK_SECONDS)
            return
        assert self.rescuer.conn is not None
        try:
            if self.cfg.pooler:  # no LISTEN through a pooler
                self.enforcer.poll_cancels(self.rescuer.conn, self.rescuer.job_keys)
                time.sleep(_TICK_SECONDS)
            else:
                self.enforcer.read_cancels(self.rescuer.conn, _TICK_SECONDS, self.rescuer.job_keys)
            self.relay.step(self.rescuer.conn)
            alive = [p is not None and p.is_alive() for p in self.children]
            by_process: dict[int, list[Overdue]] = {}
            for overdue in self.enforcer.overdue(alive):
                by_process.setdefault(overdue.slot, []).append(overdue)
            for index, found in by_process.items():
                self._kill(index, found)
            self._reap()
            if self.stop_deadline is None:
                self.schedules.tick(self.rescuer.conn)
            self.rescuer.rescue_if_due()
        except psycopg.Error as exc:
            self._fault(exc, "supervisor_connection_lost")
            with contextlib.suppress(psycopg.Error):
                self.rescuer.conn.close()
            self.rescuer.conn = None
            time.sleep(_TICK_SECONDS)
        else:
            self.retry.ok()

    def _fault(self, exc: psycopg.Error, event: str) -> None:
        fault, delay = self.retry.delay(exc)
        self.reconnect_at = time.monotonic() + delay
        self.log.warning(event, error=fault.message, sqlstate=fault.sqlstate, retry_in=delay)

    def _reconnect(self) -> bool:
        """One attempt at a new session, when the backoff allows."""
        if time.monotonic() < self.reconnect_at:
            return False
        conn: psycopg.Connection[Any] | None = None
        try:
            conn = connect(self.cfg, "supervisor")
            self._listen(conn)
        except psycopg.Error as exc:
            if conn is not None:
                conn.close()
            self._fault(exc, "supervisor_reconnect")
            return False
        self.rescuer.conn = conn
        self.relay.reset()  # a new session may meet an outbox a crash emptied
        return True

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        if not self.cfg.pooler:  # behind a pooler, cancel requests are polled
            cancel_listen(conn)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals += 1

    # -- processes -----------------------------------------------------------

    def _spawn(self, index: int) -> None:
        self.doorbell.repair(self.slots, index)  # the listening turn of the one it replaces
        self.slots.reset(index)
        proc = self.mp.Process(
            target=child_main,
            args=(
                self.cfg,
                index,
                self.slots.array,
                self.log_json,
                self.log_level,
                self.registry,
                self.doorbell,
                self.gate,
            ),
            name=f"pgjobs-worker-{index}",
            daemon=False,
        )
        proc.start()
        self.children[index] = proc
        self.started_at[index] = time.monotonic()

    def _replace(self, index: int) -> None:
        """Respawns a process that is gone, unless shutting down."""
        if self.stop_deadline is None:
            self._spawn(index)
        else:
            self.children[index] = None

    def _kill(self, index: int, found: list[Overdue]) -> None:
        """Kills a process whose jobs ``found`` are overdue: they end with their
        reasons, and whatever else it ran goes back uncounted (collateral)."""
        proc = self.children[index]
        assert proc is not None
        proc.kill()
        proc.join(5)
        self.rescuer.settle(index, proc.pid, [(o.running, o.reason) for o in found])
        for overdue in found:
            self.log.warning(
                "job_killed",
                reason=overdue.reason.error_class,
                pid=proc.pid,
                **self.rescuer.job_keys(overdue.running.job_id),
            )
        self._replace(index)

    def _reap(self) -> None:
        """A process that died on its own: its running job crashed, the rest go back."""
        for index, proc in enumerate(self.children):
            if proc is None or proc.is_alive():
                continue
            code = proc.exitcode
            running = self.slots.running_all(index)
            if code == 0 and not running:
                self.children[index] = None
                if self.stop_deadline is None and not self.cfg.exit_when_idle:
                    self._spawn(index)
                continue
            # The process stays listed until its jobs are settled: if Postgres is
            # away, the next tick (after the reconnect) settles them and respawns.
            # Every job it ran crashed with it (each attempt counts: one of them
            # may crash every process that runs it). Not a crash: a fatal fault.
            reason = ended("crash", f"worker process exited with code {code}")
            why = None if code == EXIT_FATAL else reason.message
            self.rescuer.settle(index, proc.pid, [(r, reason) for r in running], crashed=why)
            self.children[index] = None
            self.log.warning(
                "worker_process_died",
                pid=proc.pid,
                exitcode=code,
                **(self.rescuer.job_keys(running[0].job_id) if running else {"job_id": None}),
            )
            if code == EXIT_FATAL:
                # Its database said no in a way waiting does not mend (its log
                # says why): the other processes would meet the same answer.
                self.exit_code = EXIT_FATAL
                self.signals = max(self.signals, 1)
                continue
            if self.stop_deadline is None:
                if time.monotonic() - self.started_at[index] < _CRASH_BACKOFF_SECONDS:
                    time.sleep(_CRASH_BACKOFF_SECONDS)  # a crash loop must not spin
                self._spawn(index)

    def _all_exited(self) -> bool:
        return all(p is None or not p.is_alive() for p in self.children)

    def _kill_all(self) -> None:
        for proc in self.children:
            if proc is not None and proc.is_alive():
                proc.kill()
        for proc in self.children:
            if proc is not None:
                proc.join(5)

    def _stop_services(self) -> None:
        procs = [s.proc for s in (self.exporter, self.pruner) if s is not None]
        for proc in procs:
            if proc is not None and proc.is_alive():
                proc.terminate()
        for proc in procs:
            if proc is not None:
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
        self.pruner.proc = None
        if self.exporter is not None:
            self.exporter.proc = None
            self.exporter.close()
            self.exporter = None

    # -- shutdown ------------------------------------------------------------

    def _begin_shutdown(self) -> None:
        self.stop_deadline = time.monotonic() + self.cfg.grace_seconds
        self.log.info("worker_stopping", grace_seconds=self.cfg.grace_seconds)
        for proc in self.children:
            if proc is not None and proc.is_alive():
                proc.terminate()  # SIGTERM: finish the job in hand, return the rest

    def _shutdown_step(self) -> bool:
        """True once every process is gone and its jobs are settled."""
        assert self.stop_deadline is not None
        if time.monotonic() >= self.stop_deadline:
            for index, proc in enumerate(self.children):
                if proc is None or not proc.is_alive():
                    continue
                proc.kill()
                proc.join(5)
                self.children[index] = None
                if self.rescuer.settle_quietly(index, proc.pid, []):  # the attempts are not counted
                    self.log.warning("job_returned_at_shutdown", pid=proc.pid)
        return self._all_exited()

    def _stop_children(self) -> None:
        """After the supervisor's own failure: every process stops as on
        SIGTERM (its job in hand may finish within the grace), then by force;
        their jobs are settled if the database answers, else by lease."""
        self.signals = max(self.signals, 1)
        if self.stop_deadline is None:
            self._begin_shutdown()
        while not self._all_exited() and time.monotonic() < (self.stop_deadline or 0):
            time.sleep(_TICK_SECONDS)
        for index, proc in enumerate(self.children):
            if proc is None:
                continue
            if proc.is_alive():
                proc.kill()
            proc.join(5)
            why = ended("crash", "its supervisor failed")
            lost = [(running, why) for running in self.slots.running_all(index)]
            self.rescuer.settle_quietly(index, proc.pid, lost)
            self.children[index] = None


def run(
    cfg: WorkerConfig,
    *,
    log_json: bool | None = None,
    log_level: str = "info",
    registry: Registry | None = None,
) -> int:
    """Runs a worker until it stops. It runs the job types whose handlers are
    registered in ``registry`` (default: the current one) and claims no other:
    the handler path stored with a type is never imported."""
    pgjobs_log.configure(level=log_level, json_lines=log_json)
    return Supervisor(cfg, log_json=log_json, log_level=log_level, registry=registry).run()
