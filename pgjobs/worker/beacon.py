"""The lease beacon: a thread that renews the leases of the jobs this process holds.

A process that stops (SIGSTOP, kill -9, a lost host) stops renewing, and the
supervisors' rescuer gives its jobs to someone else once the lease expires.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from typing import Any

import psycopg
import structlog

from pgjobs.reconnect import Backoff, with_backoff
from pgjobs.statements import Leased
from pgjobs.statements.leases import lease_renew
from pgjobs.worker import slots as slot_fields
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.session import connect
from pgjobs.worker.slots import Slots

logger = structlog.get_logger("pgjobs.worker")


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

    def run(self) -> None:
        with contextlib.suppress(psycopg.Error):  # only once stopped
            with_backoff(
                self._serve,
                log=logger,
                event="beacon_reconnect",
                stop=self.stopped.is_set,
                wait=self._pause,
                errors=(psycopg.Error,),
                worker=self.worker,
            )

    def _pause(self, seconds: float) -> None:
        self.wake.set()
        self.stopped.wait(seconds)

    def _serve(self, backoff: Backoff) -> None:
        with connect(self.cfg, "beacon") as conn:
            backoff.reset()  # a later loss starts its backoff afresh
            self.slots.put(self.index, slot_fields.PID_BEACON, conn.info.backend_pid)
            while not self.stopped.is_set():
                self.renew(conn)
                self.stopped.wait(self.cfg.heartbeat_seconds)

    def renew(self, conn: psycopg.Connection[Any]) -> None:
        lease_renew(
            conn,
            worker=self.worker,
            ids=self.leases.ids(),
            lease_seconds=self.cfg.lease_seconds,
        )
