"""Handlers for the worker trust-boundary tests (tests/test_worker_trust*.py).

Workers started by those tests import this module (``--import
tests.support.trust_handlers``); every type is on the ``wt`` queue. Evidence
goes to side tables (``TABLES``) that any role may write, since the workers run
as a pgjobs_worker login and a handler's ``ctx.conn`` as the job's tenant.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg

import pgjobs

QUEUE = "wt"
MODULE = "tests.support.trust_handlers"
TABLES = """
create table if not exists wt_runs (job_id bigint not null, attempt int not null, pid int not null);
create table if not exists wt_gate (job_id bigint primary key);
create table if not exists wt_done (job_id bigint not null, attempt int not null);
grant select, insert, update, delete on wt_runs, wt_gate, wt_done to public;
"""
_RETRY = {"retry_base": 0.05, "retry_cap": 0.1}


def prepare(dsn: str) -> None:
    """The side tables and this module's job types, in a test's database."""
    from pgjobs import registry

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLES)
        for spec in registry.registered().values():
            if spec.name.startswith("wt."):
                registry.upsert(conn, spec)


def _side() -> psycopg.Connection[Any]:
    return psycopg.connect(os.environ["PGJOBS_DSN"], autocommit=True)


@pgjobs.job("wt.noop", queue=QUEUE, max_attempts=2, **_RETRY)
def noop(ctx: pgjobs.JobContext, **payload: Any) -> dict[str, Any]:
    return {"attempt": ctx.attempt, "pid": os.getpid()}


@pgjobs.job("wt.uses_conn", queue=QUEUE, max_attempts=2, **_RETRY)
def uses_conn(ctx: pgjobs.JobContext, **payload: Any) -> None:
    """Writes through the job's own transaction: it needs a sound job session."""
    ctx.conn.execute("insert into wt_done (job_id, attempt) values (%s, %s)", (ctx.id, ctx.attempt))


@pgjobs.job("wt.gated", queue=QUEUE, timeout=120, max_attempts=1)
def gated(ctx: pgjobs.JobContext) -> None:
    """Runs until the test opens its gate, checking for a cancel all along (a
    cancel delivered to it would end it canceled at once)."""
    with _side() as side:
        side.execute(
            "insert into wt_runs (job_id, attempt, pid) values (%s, %s, %s)",
            (ctx.id, ctx.attempt, os.getpid()),
        )
        while not side.execute("select 1 from wt_gate where job_id = %s", (ctx.id,)).fetchone():
            ctx.raise_if_canceled()
            time.sleep(0.02)
