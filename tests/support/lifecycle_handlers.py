"""Handlers and harness for the lifecycle tests (tests/test_lifecycle_*.py).

Workers started by those tests import this module (``--import
tests.support.lifecycle_handlers``). Every handler leaves evidence in side tables the
tests read, so a test can tell an attempt that ran from one that committed,
and can watch a killed attempt stop:

- ``lc_runs``: one row per attempt that started, written at once on a separate
  autocommit connection (it survives whatever happens to the attempt);
- ``lc_done``: one row per attempt, written through ``ctx.conn``, so it commits
  together with the job's completion or not at all. It has no unique key on
  purpose: a job completed twice would show up as two rows;
- ``lc_once``: like lc_done but keyed by job id, for runs too long to read
  as evidence row by row: a second completion of a job could not commit;
- ``lc_ticks``: a counter a running handler bumps every ~50 ms on a separate
  autocommit connection; once the attempt is stopped the counter must stop.

The handlers find the database in ``PGJOBS_DSN``, which the harness
(``tests/support/workers.py``) sets for the workers it starts, after creating
these tables (``SIDE_TABLES`` there).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg

import pgjobs

QUEUE = "lc"
TICK_SECONDS = 0.05

# -- the handler side -------------------------------------------------------

_side: psycopg.Connection[Any] | None = None
_side_pid = 0


def side() -> psycopg.Connection[Any]:
    """This process's autocommit connection for evidence that must survive the attempt."""
    global _side, _side_pid
    if _side is None or _side.closed or _side_pid != os.getpid():
        _side = psycopg.connect(os.environ["PGJOBS_DSN"], autocommit=True)
        _side_pid = os.getpid()
    return _side


def mark_started(ctx: pgjobs.JobContext) -> None:
    side().execute(
        "insert into lc_runs (job_id, attempt, pid) values (%s, %s, %s)",
        (ctx.id, ctx.attempt, os.getpid()),
    )


def mark_done(ctx: pgjobs.JobContext) -> None:
    ctx.conn.execute(
        "insert into lc_done (job_id, attempt, pid) values (%s, %s, %s)",
        (ctx.id, ctx.attempt, os.getpid()),
    )


class Ticker:
    """Bumps lc_ticks for one job on a connection of its own."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.conn = psycopg.connect(os.environ["PGJOBS_DSN"], autocommit=True)
        self.next_at = 0.0

    def tick(self) -> None:
        self.conn.execute(
            "insert into lc_ticks (job_id, n, pid) values (%s, 1, %s)"
            " on conflict (job_id) do update set n = lc_ticks.n + 1, pid = excluded.pid",
            (self.job_id, os.getpid()),
        )

    def tick_due(self) -> None:
        now = time.monotonic()
        if now >= self.next_at:
            self.tick()
            self.next_at = now + TICK_SECONDS

    def forever_in_thread(self) -> None:
        def run() -> None:
            while True:
                self.tick()
                time.sleep(TICK_SECONDS)

        threading.Thread(target=run, daemon=True).start()


_RETRY = {"retry_base": 0.05, "retry_cap": 0.2}


@pgjobs.job("lc.work", queue=QUEUE, timeout=60, **_RETRY)
def work(ctx: pgjobs.JobContext, seconds: float = 0.0, n: int = 0) -> dict[str, Any]:
    """Starts, takes ``seconds``, and commits its evidence with its completion."""
    if seconds:
        mark_started(ctx)
        time.sleep(seconds)
    mark_done(ctx)
    return {"n": n, "attempt": ctx.attempt}


@pgjobs.job("lc.nap", queue=QUEUE, timeout=60, **_RETRY)
def nap(ctx: pgjobs.JobContext, seconds: float = 0.001) -> None:
    """Sleeps and writes nothing: its completion is batched with its neighbours'."""
    time.sleep(seconds)


@pgjobs.job("lc.fenced", queue=QUEUE, timeout=60, **_RETRY)
def fenced(ctx: pgjobs.JobContext, first_attempt_seconds: float) -> dict[str, Any]:
    """The first attempt writes through ctx.conn and then dawdles (the test stops
    its process meanwhile); later attempts finish at once."""
    mark_done(ctx)
    mark_started(ctx)
    if ctx.attempt == 1:
        deadline = time.monotonic() + first_attempt_seconds
        while time.monotonic() < deadline:
            time.sleep(0.02)
    return {"attempt": ctx.attempt, "pid": os.getpid()}


@pgjobs.job("lc.spin", queue=QUEUE, timeout=2, max_attempts=1)
def spin(ctx: pgjobs.JobContext) -> None:
    """A busy loop that never calls ctx: only a kill stops it."""
    ticker = Ticker(ctx.id)
    mark_started(ctx)
    while True:
        ticker.tick_due()


@pgjobs.job("lc.spin_twice", queue=QUEUE, timeout=2, max_attempts=2, retry_base=0, retry_cap=0)
def spin_twice(ctx: pgjobs.JobContext) -> None:
    """lc.spin with a second attempt allowed."""
    spin(ctx)


@pgjobs.job("lc.snooze", queue=QUEUE, timeout=2, max_attempts=1)
def snooze(ctx: pgjobs.JobContext) -> None:
    """Sleeps in the main thread while another thread keeps writing: a timeout
    that only stopped the main thread would leave the ticks growing."""
    ticker = Ticker(ctx.id)
    ticker.tick()
    ticker.forever_in_thread()
    mark_started(ctx)
    time.sleep(600)


@pgjobs.job("lc.pg_snooze", queue=QUEUE, timeout=2, max_attempts=1)
def pg_snooze(ctx: pgjobs.JobContext) -> None:
    """Blocks in the server, inside the job's own transaction."""
    mark_done(ctx)  # must be rolled back with the attempt
    mark_started(ctx)
    ctx.conn.execute("select pg_sleep(600)")


@pgjobs.job("lc.cooperative", queue=QUEUE, timeout=60, **_RETRY)
def cooperative(ctx: pgjobs.JobContext) -> None:
    """Checks for cancellation between small steps, as a well-behaved job does."""
    ticker = Ticker(ctx.id)
    mark_started(ctx)
    step = 0
    while True:
        ticker.tick()
        step += 1
        ctx.progress(min(step, 100), f"step {step}")
        ctx.raise_if_canceled()
        time.sleep(TICK_SECONDS)


@pgjobs.job("lc.stubborn", queue=QUEUE, timeout=60, **_RETRY)
def stubborn(ctx: pgjobs.JobContext) -> None:
    """Ignores cancellation: never calls ctx while it works."""
    ticker = Ticker(ctx.id)
    mark_started(ctx)
    while True:
        ticker.tick_due()


@pgjobs.job("lc.limited", queue=QUEUE, timeout=60, rate_limit=5, rate_period=10, **_RETRY)
def limited(ctx: pgjobs.JobContext) -> None:
    mark_started(ctx)
    mark_done(ctx)


@pgjobs.job("lc.doomed", queue=QUEUE, timeout=60, **_RETRY)
def doomed(ctx: pgjobs.JobContext) -> None:
    """Can never succeed: dead at its first attempt, whatever max_attempts says."""
    mark_started(ctx)
    raise pgjobs.PermanentError("no such customer")


@pgjobs.job("lc.once", queue=QUEUE, timeout=60, max_attempts=20, **_RETRY)
def once(ctx: pgjobs.JobContext, n: int = 0) -> dict[str, Any]:
    """Writes its evidence only through ctx.conn, keyed by job id: what survives a
    lost connection or a restarted server is exactly what committed."""
    ctx.conn.execute(
        "insert into lc_once (job_id, attempt, pid) values (%s, %s, %s)",
        (ctx.id, ctx.attempt, os.getpid()),
    )
    return {"n": n, "attempt": ctx.attempt}


@pgjobs.job("lc.dedup", queue=QUEUE, dedup_window=60)
def dedup(ctx: pgjobs.JobContext) -> None:
    pass


@pgjobs.job("lc.dedup_no_window", queue=QUEUE, dedup_window=0)
def dedup_no_window(ctx: pgjobs.JobContext) -> None:
    pass
