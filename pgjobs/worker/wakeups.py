"""Wake-ups: how an idle worker learns that work has come.

The worker LISTENs for ``pgjobs_wakeup`` on the session it claims with, so a
notification wakes the one session that claims next, and only while it has
nothing to do: every LISTENing session reads every notification of its
database, and a busy queue sends one per state change. A worker that claimed
a full batch UNLISTENs; it LISTENs again (then claims once more) when a claim
comes back empty. Between claims it sleeps until a wake-up for one of its
queues, the next delayed job's time, or the poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from pgjobs.statements.claim import next_run_at_seconds
from pgjobs.statements.sessions import wakeup_listen, wakeup_unlisten
from pgjobs.worker.config import WorkerConfig

_STEP_SECONDS = 0.25  # the longest a sleep goes without looking at `stopping`


class Wakeups:
    def __init__(self, cfg: WorkerConfig, wake: threading.Event) -> None:
        self.cfg = cfg
        # Set by SIGTERM and by the beacon: ends a sleep without a notification.
        self.wake = wake
        self.conn: psycopg.Connection[Any] | None = None
        self.listening = False
        self.job_types: list[str] = []  # the runner's: a delayed job of another type wakes no one

    def attach(self, conn: psycopg.Connection[Any]) -> None:
        """A new session (after a reconnect) LISTENs to nothing yet."""
        self.conn = conn
        self.listening = False

    def listen(self, on: bool) -> bool:
        """LISTEN (or UNLISTEN), unless already so or polling only; whether it
        changed anything."""
        if on == self.listening or not self.cfg.listen:
            return False
        assert self.conn is not None
        (wakeup_listen if on else wakeup_unlisten)(self.conn)
        self.listening = on
        return True

    def after_batch(self, busy: bool) -> None:
        """Drops the wake-ups that came while the session was busy (psycopg keeps
        them: the claim that follows answers them all); after a full batch,
        stops listening, since more is waiting anyway."""
        if self.listening and self.conn is not None:
            for _ in self.conn.notifies(timeout=0):
                pass
        if busy:
            self.listen(False)

    def sleep_until_due(self, stopping: Callable[[], bool], step: float | None = None) -> None:
        """Until a wake-up for one of our queues, the next delayed job's time,
        or the poll; in steps (``step``, default 0.25 s), so that SIGTERM, and
        ``wake`` while listening, are seen."""
        step = step or _STEP_SECONDS
        conn = self.conn
        assert conn is not None
        wait = self.cfg.poll_seconds
        due = next_run_at_seconds(conn, queues=self.cfg.queues, job_types=self.job_types)
        if due is not None:
            wait = max(0.0, min(wait, due))
        deadline = time.monotonic() + wait
        while not stopping() and not self.wake.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not self.listening:
                self.wake.wait(min(left, step))
            elif self._woken(conn, min(left, step)):
                break

    def _woken(self, conn: psycopg.Connection[Any], timeout: float) -> bool:
        """Whether a wake-up for one of our queues comes within ``timeout``
        seconds (the claim that follows drops any others already here)."""
        notes = conn.notifies(timeout=timeout)
        woken = any(note.payload in self.cfg.queues for note in notes)
        notes.close()  # it holds the connection's lock until closed
        return woken
