"""The lease beacon: a thread that renews the leases of the jobs this process holds.

A process that stops (SIGSTOP, kill -9, a lost host) stops renewing, and the
supervisors' rescuer gives its jobs to someone else once the lease expires.

The beacon also watches the supervisor. Once it is gone, the worker process
stops as on SIGTERM (the parent-death signal says so at once; the parent pid
is the fallback): the job in hand may finish, the rest go back. If the job in
hand is still running after the grace, nobody is left to kill it, so the
beacon settles what the process holds (the started jobs fail and count, the
others go back uncounted) and ends the process itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

import psycopg
import structlog

from pgjobs.faults import Fatal, Retry, retry_moved
from pgjobs.reconnect import with_backoff
from pgjobs.statements import Failed, Lease, Leased
from pgjobs.statements.leases import lease_renew, worker_session_add
from pgjobs.statements.outcomes import fail_many, return_many
from pgjobs.worker import slots as slot_fields
from pgjobs.worker.child import leave
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.session import connect, direct
from pgjobs.worker.slots import Slots

logger = structlog.get_logger("pgjobs.worker")

_WATCH_SECONDS = 0.25  # how often the beacon looks for its supervisor


class Leases:
    """The jobs this process holds (id -> lease token): written by the main
    thread as it claims and settles jobs, read by the beacon thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, int] = {}

    def hold(self, jobs: Iterable[Leased]) -> None:
        with self._lock:
            for job in jobs:
                self._held[job.id] = job.lease_token

    def release(self, jobs: Iterable[Leased]) -> None:
        with self._lock:
            for job in jobs:
                self._held.pop(job.id, None)

    def ids(self) -> list[int]:
        with self._lock:
            return list(self._held)

    def held(self) -> list[Lease]:
        with self._lock:
            return [Lease(job_id, token) for job_id, token in self._held.items()]


class Beacon(threading.Thread):
    """Renews every held lease each ``heartbeat_seconds`` on a session of its own."""

    def __init__(
        self,
        cfg: WorkerConfig,
        worker: str,
        leases: Leases,
        slots: Slots,
        index: int,
        wake: threading.Event,
    ) -> None:
        super().__init__(name="pgjobs-beacon", daemon=True)
        self.cfg = cfg
        self.worker = worker
        self.leases = leases
        self.slots = slots
        self.index = index
        self.wake = wake  # set when the beacon loses its session: the loop looks too
        self.stopped = threading.Event()
        self.failed: Fatal | None = None  # an error waiting does not clear: the loop raises it
        self.parent = os.getppid()
        self.orphaned_at: float | None = None

    def run(self) -> None:
        try:
            with_backoff(
                self._serve,
                log=logger,
                event="beacon_reconnect",
                stop=self.stopped.is_set,
                wait=self._pause,
                worker=self.worker,
            )
        except psycopg.Error:
            pass  # only once stopped
        except Fatal as exc:
            self.failed = exc
            self.wake.set()

    def _pause(self, seconds: float) -> None:
        self.wake.set()
        deadline = time.monotonic() + seconds
        while not self.stopped.wait(min(_WATCH_SECONDS, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                return
            self._watch(None)

    def _serve(self, retry: Retry) -> None:
        with connect(self.cfg, "beacon") as conn:
            self.slots.put(self.index, slot_fields.PID_BEACON, conn.info.backend_pid)
            if direct(self.cfg):
                worker_session_add(conn, worker=self.worker)
            while not self.stopped.is_set():
                self.renew(conn)
                retry.ok()  # a later fault starts its backoff afresh
                deadline = time.monotonic() + self.cfg.heartbeat_seconds
                while not self.stopped.wait(_WATCH_SECONDS) and time.monotonic() < deadline:
                    self._watch(conn)

    def _watch(self, conn: psycopg.Connection[Any] | None) -> None:
        """Once the supervisor is gone and the grace has passed, settles what
        this process holds and ends it (see the module docstring)."""
        now = time.monotonic()
        if self.orphaned_at is None:
            if os.getppid() == self.parent:
                return
            self.orphaned_at = now
            os.kill(os.getpid(), signal.SIGTERM)  # the parent-death signal, if it never came
        if now - self.orphaned_at < self.cfg.grace_seconds:
            return
        logger.warning("worker_abandoned", worker=self.worker, reason="the supervisor is gone")
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.settle_held(conn)
        leave(1)

    def settle_held(self, conn: psycopg.Connection[Any]) -> None:
        """The jobs this process started fail (their attempt counts); the ones
        it only held go back uncounted. Fenced by the lease, as ever."""
        started = {job_id for job_id, _ in self.slots.started(self.index)}
        held = self.leases.held()
        reason = Failed(
            "worker_lost", "the supervisor died and the job did not end within the grace",
            None, False, None,
        )  # fmt: skip
        ran = [lease for lease in held if lease.id in started]
        if ran:
            fail_many(conn, [(lease, reason) for lease in ran])
        rest = [lease for lease in held if lease.id not in started]
        if rest:
            return_many(conn, rest)

    def renew(self, conn: psycopg.Connection[Any]) -> None:
        # A job this process just completed moves to jobs_finished while the
        # renewal waits for its row: tried again at once, not a lost session.
        retry_moved(lambda: lease_renew(
            conn,
            worker=self.worker,
            ids=self.leases.ids(),
            lease_seconds=self.cfg.lease_seconds,
        ))
