"""Handlers and hooks for the fault tests (tests/test_faults_*.py).

Workers under those tests import this module besides the lifecycle handlers
(``--import tests.support.fault_handlers``); its job types are ``lc.*`` too,
so :func:`tests.support.workers.prepare` registers them. Importing it also
arms a failure of the supervisor's loop: once the file named by
``PGJOBS_TEST_BREAK_FILE`` exists, the schedule tick the loop calls on every
round raises, a stand-in for any bug in what the loop calls.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psycopg

import pgjobs
from pgjobs.schedules import fire
from tests.support.lifecycle_handlers import QUEUE, mark_started

MODULE = "tests.support.fault_handlers"
BREAK_FILE = "PGJOBS_TEST_BREAK_FILE"

# A row the lock-holding handler locks through ctx.conn (a tenant's transaction).
TABLES = """
create table if not exists lc_locks (id int primary key);
insert into lc_locks values (1) on conflict do nothing;
grant select, update on lc_locks to public;
"""


def prepare(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLES)


@pgjobs.job("lc.quick_once", queue=QUEUE, timeout=60, max_attempts=1)
def quick_once(ctx: pgjobs.JobContext, seconds: float = 0.0) -> dict[str, Any]:
    """Records that it ran (on its own connection), outside ctx.conn: its
    outcome waits in the worker's buffer like any quick job's."""
    mark_started(ctx)
    if seconds:
        time.sleep(seconds)
    return {"attempt": ctx.attempt}


@pgjobs.job("lc.kill_own_process", queue=QUEUE, timeout=60, max_attempts=1)
def kill_own_process(ctx: pgjobs.JobContext) -> None:
    """Dies at once, with the outcomes of the jobs before it still unwritten."""
    mark_started(ctx)
    os.kill(os.getpid(), signal.SIGKILL)


@pgjobs.job(
    "lc.lock_then_sleep", queue=QUEUE, timeout=60, max_attempts=2, retry_base=0, retry_cap=0
)
def lock_then_sleep(ctx: pgjobs.JobContext) -> dict[str, Any]:
    """Locks a row through ctx.conn; the first attempt then sleeps in the
    server with the lock held, the second one finishes at once."""
    ctx.conn.execute("select id from lc_locks where id = 1 for update")
    mark_started(ctx)
    if ctx.attempt == 1:
        ctx.conn.execute("select pg_sleep(600)")
    return {"attempt": ctx.attempt}


_tick = fire.Firer.tick


def _breakable_tick(self: fire.Firer, conn: psycopg.Connection[Any]) -> None:
    path = os.environ.get(BREAK_FILE)
    if path and os.path.exists(path):
        raise RuntimeError("injected failure in the supervisor's loop")
    _tick(self, conn)


fire.Firer.tick = _breakable_tick  # type: ignore[method-assign]
