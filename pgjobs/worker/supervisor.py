"""The supervisor: starts N worker processes and keeps them honest.

It is the one place that kills: a job past its timeout, or a canceled job that
did not return within its grace, has its process killed (SIGKILL, so a busy
loop, a sleep and a blocked C call all stop), its database sessions terminated
(so a long query stops too), its attempt recorded, and the process replaced.
It also rescues jobs whose lease expired (one rescuer at a time) and drives
graceful shutdown. With ``--metrics-port`` it keeps a Prometheus exporter
process alive, and with ``--prune-after`` it forks a pruner at start and daily.
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
from pgjobs import sql
from pgjobs.registry import Registry, current
from pgjobs.schedules.fire import Firer
from pgjobs.worker import slots as slot_fields
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.exporter import MetricsServer, exporter_main
from pgjobs.worker.pruner import pruner_main
from pgjobs.worker.runner import child_main, connect, worker_name
from pgjobs.worker.slots import Running, Slots, now_ms

logger = structlog.get_logger("pgjobs.supervisor")

_TICK_SECONDS = 0.05
_CRASH_BACKOFF_SECONDS = 1.0
_PRUNE_RETRY_SECONDS = 300.0  # a failed prune run (Postgres away, say) is retried this soon


class Supervisor:
    def __init__(
        self,
        cfg: WorkerConfig,
        log_json: bool | None = None,
        log_level: str = "info",
        registry: Registry | None = None,
    ) -> None:
        self.cfg = cfg
        self.registry = registry or current()
        self.log_json = log_json
        self.log_level = log_level
        # fork: workers inherit the imported handlers and start in milliseconds.
        # The supervisor holds no threads, and a child never touches (or closes)
        # the connection it inherits: it leaves by os._exit.
        self.mp = multiprocessing.get_context("fork")
        self.slots = Slots(cfg.processes, self.mp.RawArray("q", cfg.processes * slot_fields.FIELDS))
        self.children: list[multiprocessing.context.ForkProcess | None] = [None] * cfg.processes
        self.started_at: list[float] = [0.0] * cfg.processes
        self.signals = 0
        self.stop_deadline: float | None = None
        self.pending_cancels: dict[int, float] = {}  # job id -> forget after
        self.next_rescue = 0.0
        self.conn: psycopg.Connection | None = None
        self.log = logger.bind(worker=worker_name())
        self.metrics_server: MetricsServer | None = None
        self.exporter: multiprocessing.context.ForkProcess | None = None
        self.next_exporter = 0.0
        self.pruner: multiprocessing.context.ForkProcess | None = None
        self.next_prune = 0.0  # at start, then every prune_every_seconds
        self.schedules = Firer()  # fires due periodic jobs (pgjobs/schedules/fire.py)

    # -- entry -------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for module in self.cfg.imports:
            importlib.import_module(module)  # before the fork: workers inherit handlers
        self._connect()
        assert self.conn is not None
        self.registry.sync(self.conn)
        try:
            self._serve_metrics()
            for index in range(self.cfg.processes):
                self._spawn(index)
            self.log.info(
                "worker_started", processes=self.cfg.processes, queues=list(self.cfg.queues)
            )
            while True:
                if self.signals >= 2:
                    self._kill_all()
                    self.log.warning("worker_forced_exit")
                    return 1
                if self.signals == 1 and self.stop_deadline is None:
                    self._begin_shutdown()
                if self.stop_deadline is not None and self._shutdown_step():
                    return 0
                if self.cfg.exit_when_idle and self._all_exited() and self.pruner is None:
                    return 0
                if self.stop_deadline is None:
                    self._maintain()
                self._tick()
        finally:
            self._stop_services()
            if self.conn is not None:
                self.conn.close()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals += 1

    # -- processes ---------------------------------------------------------

    def _spawn(self, index: int) -> None:
        self.slots.reset(index)
        proc = self.mp.Process(
            target=child_main,
            args=(self.cfg, index, self.slots.array, self.log_json, self.log_level, self.registry),
            name=f"pgjobs-worker-{index}",
            daemon=False,
        )
        proc.start()
        self.children[index] = proc
        self.started_at[index] = time.monotonic()

    def _all_exited(self) -> bool:
        return all(p is None or not p.is_alive() for p in self.children)

    def _kill_all(self) -> None:
        for proc in self.children:
            if proc is not None and proc.is_alive():
                proc.kill()
        for proc in self.children:
            if proc is not None:
                proc.join(5)

    # -- metrics exporter and pruner ---------------------------------------

    def _serve_metrics(self) -> None:
        if self.cfg.metrics_port is None:
            return
        try:
            self.metrics_server = MetricsServer(self.cfg)
        except OSError as exc:
            where = f"{self.cfg.metrics_host}:{self.cfg.metrics_port}"
            raise ValueError(f"cannot serve metrics on {where}: {exc.strerror or exc}") from exc
        self._spawn_exporter()
        self.log.info("metrics_serving", host=self.cfg.metrics_host, port=self.metrics_server.port)

    def _spawn_exporter(self) -> None:
        self.exporter = self.mp.Process(
            target=exporter_main,
            args=(self.metrics_server, self.log_json, self.log_level),
            name="pgjobs-exporter",
            daemon=False,
        )
        self.exporter.start()
        self.next_exporter = time.monotonic() + _CRASH_BACKOFF_SECONDS

    def _maintain(self) -> None:
        """Keeps the exporter alive and runs the pruner on schedule."""
        now = time.monotonic()
        if self.exporter is not None and not self.exporter.is_alive():
            self.exporter.join(0)
            self.log.warning("metrics_exporter_died", exitcode=self.exporter.exitcode)
            self.exporter = None
        if self.metrics_server is not None and self.exporter is None and now >= self.next_exporter:
            self._spawn_exporter()
        if self.pruner is not None and not self.pruner.is_alive():
            self.pruner.join(0)
            if self.pruner.exitcode != 0:
                self.next_prune = min(self.next_prune, now + _PRUNE_RETRY_SECONDS)
            self.pruner = None
        prune_due = self.cfg.prune_after_seconds is not None and now >= self.next_prune
        if prune_due and self.pruner is None:
            self.pruner = self.mp.Process(
                target=pruner_main,
                args=(self.cfg, worker_name(), self.log_json, self.log_level),
                name="pgjobs-pruner",
                daemon=False,
            )
            self.pruner.start()
            self.next_prune = now + self.cfg.prune_every_seconds

    def _stop_services(self) -> None:
        for proc in (self.exporter, self.pruner):
            if proc is not None and proc.is_alive():
                proc.terminate()
        for proc in (self.exporter, self.pruner):
            if proc is not None:
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
        self.exporter = self.pruner = None
        if self.metrics_server is not None:
            self.metrics_server.server_close()
            self.metrics_server = None

    # -- the tick ----------------------------------------------------------

    def _tick(self) -> None:
        try:
            self._wait_for_cancels(_TICK_SECONDS)
            self._enforce()
            self._reap()
            if self.stop_deadline is None:
                assert self.conn is not None
                self.schedules.tick(self.conn)
            if time.monotonic() >= self.next_rescue:
                self._rescue()
                self.next_rescue = time.monotonic() + max(self.cfg.lease_seconds / 4, 0.2)
        except psycopg.OperationalError as exc:
            self.log.warning("supervisor_connection_lost", error=str(exc))
            time.sleep(_TICK_SECONDS)
            self._connect()

    def _connect(self) -> None:
        delay = 0.1
        while True:
            try:
                if self.conn is not None:
                    self.conn.close()
                self.conn = connect(self.cfg, "supervisor")
                self.conn.execute("listen pgjobs_cancel")
                return
            except psycopg.OperationalError as exc:
                if self.signals:
                    raise
                self.log.warning("supervisor_reconnect", error=str(exc), retry_in=delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _wait_for_cancels(self, timeout: float) -> None:
        assert self.conn is not None
        for note in self.conn.notifies(timeout=timeout):
            try:
                job_id = int(note.payload)
            except ValueError:
                continue
            self.pending_cancels[job_id] = time.monotonic() + self.cfg.lease_seconds
        if self.pending_cancels:
            self._deliver_cancels()

    def _deliver_cancels(self) -> None:
        now = time.monotonic()
        for job_id, forget_at in list(self.pending_cancels.items()):
            for index in range(self.cfg.processes):
                running = self.slots.running(index)
                if running and running.job_id == job_id:
                    self.slots.request_cancel(index, job_id, self.cfg.cancel_grace_seconds)
                    del self.pending_cancels[job_id]
                    self.log.info("job_cancel_delivered", **self._job_keys(job_id))
                    break
            else:
                if now > forget_at:
                    del self.pending_cancels[job_id]

    def _enforce(self) -> None:
        now = now_ms()
        for index, proc in enumerate(self.children):
            if proc is None or not proc.is_alive():
                continue
            running = self.slots.running(index)
            if running is None:
                continue
            if running.deadline_ms and now > running.deadline_ms:
                self._kill(index, running, "timeout", "the job exceeded its timeout")
            elif self.slots.cancel_requested(index, running.job_id) and now > self.slots.get(
                index, slot_fields.CANCEL_DEADLINE_MS
            ):
                self._kill(index, running, "canceled", "canceled; did not stop within the grace")

    def _kill(self, index: int, running: Running, error_class: str, message: str) -> None:
        proc = self.children[index]
        assert proc is not None and self.conn is not None
        pid = proc.pid
        proc.kill()
        proc.join(5)
        self._terminate_backends(index)
        self.conn.execute(
            sql.query("job_fail_many"),
            {
                "ids": [running.job_id],
                "tokens": [running.lease_token],
                "error_classes": [error_class],
                "messages": [message],
                "tracebacks": [None],
                "permanent": [False],
                "durations": [None],
                "now": None,
            },
        )
        self._return_unstarted(pid, [running.job_id])
        self.log.warning(
            "job_killed", reason=error_class, pid=pid, **self._job_keys(running.job_id)
        )
        if self.stop_deadline is None:
            self._spawn(index)
        else:
            self.children[index] = None

    def _job_keys(self, job_id: int) -> dict[str, Any]:
        """The keys every job event carries (job_id, job_type, organization,
        attempt), for the supervisor's rare events about one job."""
        keys: dict[str, Any] = {"job_id": job_id}
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                row = self.conn.execute(sql.query("job_log_keys"), {"id": job_id}).fetchone()
                if row is not None:
                    keys.update(job_type=row[0], organization=row[1], attempt=row[2])
        return keys

    def _terminate_backends(self, index: int) -> None:
        assert self.conn is not None
        pids = self.slots.backend_pids(index)
        if pids:
            self.conn.execute(sql.query("backend_terminate"), {"pids": pids})

    def _return_unstarted(self, pid: int | None, except_ids: list[int]) -> None:
        assert self.conn is not None
        if pid is None:
            return
        self.conn.execute(
            sql.query("job_return_worker"),
            {"worker": worker_name(pid), "except_ids": except_ids},
        )
        self.conn.execute(sql.query("worker_unregister"), {"worker": worker_name(pid)})

    def _reap(self) -> None:
        """A process that died on its own: its running job crashed, the rest go back."""
        for index, proc in enumerate(self.children):
            if proc is None or proc.is_alive():
                continue
            code = proc.exitcode
            running = self.slots.running(index)
            if code == 0 and running is None:
                self.children[index] = None
                if self.stop_deadline is None and not self.cfg.exit_when_idle:
                    self._spawn(index)
                continue
            # The process stays listed until its jobs are settled: if Postgres is
            # away, the next tick (after the reconnect) settles them and respawns.
            self._terminate_backends(index)
            if running is not None:
                assert self.conn is not None
                self.conn.execute(
                    sql.query("job_fail_many"),
                    {
                        "ids": [running.job_id],
                        "tokens": [running.lease_token],
                        "error_classes": ["crash"],
                        "messages": [f"worker process exited with code {code}"],
                        "tracebacks": [None],
                        "permanent": [False],
                        "durations": [None],
                        "now": None,
                    },
                )
            self._return_unstarted(proc.pid, [running.job_id] if running else [])
            self.children[index] = None
            self.log.warning(
                "worker_process_died",
                pid=proc.pid,
                exitcode=code,
                **(self._job_keys(running.job_id) if running else {"job_id": None}),
            )
            if self.stop_deadline is None:
                if time.monotonic() - self.started_at[index] < _CRASH_BACKOFF_SECONDS:
                    time.sleep(_CRASH_BACKOFF_SECONDS)  # a crash loop must not spin
                self._spawn(index)

    def _rescue(self) -> None:
        assert self.conn is not None
        with self.conn.transaction():
            rows = self.conn.execute(sql.query("lease_rescue"), {"now": None}).fetchall()
            self.conn.execute(
                sql.query("worker_forget_stale"), {"stale_seconds": self.cfg.lease_seconds * 4}
            )
        for job_id, state, job_type, organization, attempt in rows:
            self.log.warning(
                "job_rescued",
                job_id=job_id,
                job_type=job_type,
                organization=organization,
                attempt=attempt,
                state=state,
            )

    # -- shutdown ----------------------------------------------------------

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
                pid = proc.pid
                proc.kill()
                proc.join(5)
                self._terminate_backends(index)
                self._return_unstarted(pid, [])  # the attempt in hand is not counted
                self.children[index] = None
                self.log.warning("job_returned_at_shutdown", pid=pid)
        return self._all_exited()


def run(
    cfg: WorkerConfig,
    *,
    log_json: bool | None = None,
    log_level: str = "info",
    registry: Registry | None = None,
) -> int:
    """Runs a worker until it stops; its handlers come from ``registry`` (default:
    the current one), else from the paths stored with the job types."""
    pgjobs_log.configure(level=log_level, json_lines=log_json)
    return Supervisor(cfg, log_json=log_json, log_level=log_level, registry=registry).run()
