"""The state relay: sends the ``pgjobs_state`` events of the worker's own
sessions, from one session, in one commit per pass.

A transaction that sends a NOTIFY commits only while holding a lock that every
notifying commit of the server takes in turn (PreCommit_Notify). With every
claim and completion notifying, worker processes queued on it and throughput
fell as processes were added past the cores. So the worker's sessions set
``pgjobs.relay_state_events`` and the state trigger writes their events to
``pgjobs.state_outbox`` (one row per statement), and the supervisor calls
:meth:`StateRelay.step` every tick: ``pgjobs.state_relay`` sends the rows as
the same NOTIFYs (one per state change, the same payload) and deletes them,
one relaying session at a time (a transaction advisory lock), so several
supervisors on several hosts neither send an event twice nor lose one when
one stops.

Outbox rows commit out of id order (ids are drawn before the commit), so a
pass may see id 12 before 11 commits. The relay remembers the ids it skipped
and reads again from the lowest; an id still missing after ``gap_seconds``
was rolled back (or is so late that the periodic sweep from the start finds
it). Reading from the highest id seen, not from the start of the table, keeps
a pass from stepping over the deleted rows an old snapshot (an idle
transaction) keeps from being vacuumed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg

from pgjobs.statements.relay import state_relay

# Outbox rows per pass, and passes at most per step when rows keep coming.
_BATCH = 1000
_PASSES = 5
# A skipped id is given up after this long; gaps wider than this many ids (a
# relay starting late, or another relay's turns) are not tracked one by one.
_GAP_SECONDS = 30.0
_GAP_SPAN = 10_000
# Every so often a pass reads from the start, for rows given up on too early.
_SWEEP_SECONDS = 60.0


class StateRelay:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        """Forget what was seen: after a reconnect the outbox may have been
        emptied (it is unlogged, so a server crash truncates it) and its ids
        restarted."""
        self.high = 0  # the highest id sent
        self.pending: dict[int, float] = {}  # ids skipped -> when first missed
        self.next_sweep = self.clock() + _SWEEP_SECONDS

    def step(self, conn: psycopg.Connection[Any]) -> int:
        """Sends what the outbox holds (up to a few passes); the rows sent."""
        sent = 0
        for _ in range(_PASSES):
            ids = self._pass(conn)
            sent += len(ids)
            if len(ids) < _BATCH:
                break
        return sent

    def _pass(self, conn: psycopg.Connection[Any]) -> list[int]:
        now = self.clock()
        sweep = now >= self.next_sweep
        after = 0 if sweep else min(self.pending, default=self.high + 1) - 1
        ids = state_relay(conn, after=after, n=_BATCH)
        if sweep:
            self.next_sweep = now + _SWEEP_SECONDS
        for id_ in ids:
            self.pending.pop(id_, None)
        top = max(ids, default=0)
        if top > self.high:
            if top - self.high <= _GAP_SPAN:
                for missing in set(range(self.high + 1, top)).difference(ids):
                    self.pending[missing] = now
            self.high = top
        for id_, since in list(self.pending.items()):
            if now - since > _GAP_SECONDS:
                del self.pending[id_]
        return ids
