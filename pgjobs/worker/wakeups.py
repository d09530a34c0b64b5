"""Wake-ups: how an idle worker learns that work has come.

Of a supervisor's idle processes, one at a time LISTENs for ``pgjobs_wakeup``
on the session it claims with: the one holding the supervisor's listening
*turn* (:class:`Doorbell`). The others wait on the doorbell, a semaphore
shared with their siblings, which wakes one of them per ring. Every
LISTENing session reads every notification of its database, and with all idle
processes listening, one enqueue woke them all: each claimed, one found the
job and the rest nothing, which on a small machine took the CPU the winner
needed (32 processes: a dozen milliseconds per job).

The turn holder, woken, claims; if it got jobs it gives the turn up, which
rings, so that a sibling takes the turn (LISTEN, then one claim for what came
before it) while it runs them; it takes the turn back after its batch if no
one did. A claim that came back full rings as well (the queue holds more), so
a burst draws in one process after another. Between claims a process sleeps
until a wake-up (the holder: a notification for one of its queues, or the
next delayed job's time; the others: a ring), or the poll.

Polling only (``listen`` off, behind a pooler), every process polls, as before.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from multiprocessing.context import BaseContext
from typing import Any

import psycopg

from pgjobs.statements.claim import next_run_at_seconds
from pgjobs.statements.sessions import wakeup_listen, wakeup_unlisten
from pgjobs.worker import slots as slot_fields
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.slots import Slots

_STEP_SECONDS = 0.25  # the longest a sleep goes without looking at `stopping`


class Doorbell:
    """The listening turn and the bell of one supervisor's processes, made
    before they are forked. Neither is a lock: a process killed anywhere
    leaves no one blocked, and the supervisor gives back the turn of a dead
    process whose slot says it held it (:meth:`repair`)."""

    def __init__(self, mp: BaseContext) -> None:
        self.turn = mp.BoundedSemaphore(1)
        self.bell = mp.Semaphore(0)

    def take(self, slots: Slots, index: int) -> bool:
        # The slot says so first: a process killed between the two still
        # shows it, and the worst a wrong repair makes is a second listener.
        slots.put(index, slot_fields.TURN, 1)
        taken = self.turn.acquire(False)
        if not taken:
            slots.put(index, slot_fields.TURN, 0)
        return taken

    def give(self, slots: Slots, index: int) -> None:
        """Frees the turn and rings: a waiting sibling takes it."""
        with contextlib.suppress(ValueError):  # already free (a repair's double)
            self.turn.release()
        slots.put(index, slot_fields.TURN, 0)
        self.ring()

    def repair(self, slots: Slots, index: int) -> None:
        """The supervisor, for a process that is gone: its turn, if it held
        it, goes to a sibling."""
        if slots.get(index, slot_fields.TURN):
            self.give(slots, index)

    def ring(self) -> None:
        """Wakes one waiting process; at most one ring waits for a process
        that is not waiting yet (a busy worker claims after its batch anyway)."""
        with contextlib.suppress(NotImplementedError):
            if self.bell.get_value() > 0:
                return
        self.bell.release()

    def wait(self, seconds: float) -> bool:
        """Whether a ring came within ``seconds``."""
        return self.bell.acquire(timeout=seconds)


class Wakeups:
    def __init__(
        self,
        cfg: WorkerConfig,
        wake: threading.Event,
        doorbell: Doorbell | None = None,
        slots: Slots | None = None,
        index: int = 0,
    ) -> None:
        self.cfg = cfg
        # Set by SIGTERM and by the beacon: ends a sleep without a notification.
        self.wake = wake
        self.conn: psycopg.Connection[Any] | None = None
        self.listening = False
        self.job_types: list[str] = []  # the runner's: a delayed job of another type wakes no one
        # No doorbell (a process on its own): it holds the turn for good.
        self.doorbell = doorbell if cfg.listen else None
        self.slots = slots
        self.index = index
        self.holding = self.doorbell is None

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

    def _take(self) -> bool:
        if not self.holding and self.doorbell is not None and self.slots is not None:
            self.holding = self.doorbell.take(self.slots, self.index)
        return self.holding

    def release(self) -> None:
        """Gives the turn to a sibling (this process has jobs, a fault, or stops)."""
        if self.doorbell is not None and self.slots is not None and self.holding:
            self.holding = False
            self.doorbell.give(self.slots, self.index)

    def claimed(self, full: bool) -> None:
        """A claim took jobs: while this process runs them, the turn goes to a
        sibling, rung to take it; a full claim rings too (more is waiting)."""
        if self.doorbell is None:
            return
        if self.holding:
            self.release()  # rings
        elif full:
            self.doorbell.ring()

    def after_batch(self) -> None:
        """Drops the wake-ups that came while the session was busy (psycopg keeps
        them: the claim that follows answers them all); takes the turn back if no
        sibling took it, else stops listening."""
        if self.listening and self.conn is not None:
            for _ in self.conn.notifies(timeout=0):
                pass
        if self.listening and self.doorbell is not None and not self._take():
            self.listen(False)

    def idle(self) -> bool:
        """A claim found nothing: LISTEN if this process holds (or now takes)
        the turn. True when the LISTEN is new, for one more claim (what came
        before it)."""
        if self._take():
            return self.listen(True)
        self.listen(False)
        return False

    def sleep_until_due(self, stopping: Callable[[], bool], step: float | None = None) -> None:
        """Until a wake-up, the next delayed job's time (the turn holder), or
        the poll; in steps (``step``, default 0.25 s), so that SIGTERM and
        ``wake`` are seen. Without the turn: until a ring or a free turn."""
        step = step or _STEP_SECONDS
        if not self.holding:
            self._wait_for_bell(stopping, step)
            return
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

    def _wait_for_bell(self, stopping: Callable[[], bool], step: float) -> None:
        """Until a ring (then the turn, if free, with its LISTEN: the claim
        that follows sees what came before it), or the poll: the safety net,
        since the holder sees delayed jobs come due and rings if its claim of
        them came back full. Every release of the turn rings."""
        assert self.doorbell is not None
        deadline = time.monotonic() + self.cfg.poll_seconds
        while not stopping() and not self.wake.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.doorbell.wait(min(left, step)):
                if self._take():
                    self.listen(True)
                return

    def _woken(self, conn: psycopg.Connection[Any], timeout: float) -> bool:
        """Whether a wake-up for one of our queues comes within ``timeout``
        seconds (the claim that follows drops any others already here)."""
        notes = conn.notifies(timeout=timeout)
        woken = any(note.payload in self.cfg.queues for note in notes)
        notes.close()  # it holds the connection's lock until closed
        return woken
