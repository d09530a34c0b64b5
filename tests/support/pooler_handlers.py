"""Handlers for the PgBouncer test (tests/test_pooler.py).

Workers import this module and reach the database through PgBouncer. What a
handler does through ``ctx.conn`` (``pb_done``) goes through the pooler too
and commits with the job's completion, so a job completed twice shows up as
two rows. Evidence that must survive a killed attempt (``pb_started``) goes on
a direct connection (``PGJOBS_TEST_DIRECT_DSN``), outside the pool under test.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg

import pgjobs

QUEUE = "pb"
DIRECT_ENV = "PGJOBS_TEST_DIRECT_DSN"

SIDE_TABLES = """
create table if not exists pb_done (job_id bigint not null, attempt int not null, pid int not null);
create table if not exists pb_started (job_id bigint not null, attempt int not null,
                                       pid int not null);
grant select, insert on pb_done, pb_started to public;
"""

_side: psycopg.Connection[Any] | None = None
_side_pid = 0


def _started(ctx: pgjobs.JobContext) -> None:
    global _side, _side_pid
    if _side is None or _side_pid != os.getpid():
        _side = psycopg.connect(os.environ[DIRECT_ENV], autocommit=True)
        _side_pid = os.getpid()
    _side.execute(
        "insert into pb_started (job_id, attempt, pid) values (%s, %s, %s)",
        (ctx.id, ctx.attempt, os.getpid()),
    )


def _done(ctx: pgjobs.JobContext) -> None:
    ctx.conn.execute(
        "insert into pb_done (job_id, attempt, pid) values (%s, %s, %s)",
        (ctx.id, ctx.attempt, os.getpid()),
    )


_FAST = {"retry_base": 0.05, "retry_cap": 0.2}


@pgjobs.job("pb.work", queue=QUEUE, timeout=30, max_attempts=3, **_FAST)
def work(ctx: pgjobs.JobContext, n: int = 0) -> dict[str, Any]:
    _done(ctx)
    return {"n": n}


@pgjobs.job("pb.flaky", queue=QUEUE, timeout=30, max_attempts=5, **_FAST)
def flaky(ctx: pgjobs.JobContext) -> None:
    """Fails twice, then succeeds."""
    if ctx.attempt < 3:
        raise pgjobs.TransientError(f"attempt {ctx.attempt} fails on purpose")
    _done(ctx)


@pgjobs.job("pb.hang", queue=QUEUE, timeout=2, max_attempts=1)
def hang(ctx: pgjobs.JobContext) -> None:
    """Sleeps past its timeout: only the process kill ends it."""
    _started(ctx)
    time.sleep(600)


@pgjobs.job("pb.pg_hang", queue=QUEUE, timeout=2, max_attempts=1)
def pg_hang(ctx: pgjobs.JobContext) -> None:
    """Blocks in the server, in the job's transaction through the pooler."""
    _started(ctx)
    ctx.conn.execute("select pg_sleep(600)")


@pgjobs.job("pb.stubborn", queue=QUEUE, timeout=300, max_attempts=3)
def stubborn(ctx: pgjobs.JobContext) -> None:
    """Never calls ctx again once started: a cancel must be enforced by a kill."""
    _started(ctx)
    time.sleep(600)
