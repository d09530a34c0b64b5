"""Handlers for the tenant-scope tests; worker processes import this module
(``--import tests.support.client_handlers``). Evidence goes into ``scope_trace``, a
table the test creates, through ``ctx.conn``: it commits with the job."""

from __future__ import annotations

from typing import Any

import psycopg

import pgjobs

TRACE_TABLE = "create table scope_trace (job_id bigint primary key, steps text[], seen text[])"


def _scope(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("select coalesce(pgjobs.current_organization(), '-')").fetchone()
    assert row is not None
    return str(row[0])


@pgjobs.job("c.nested_scope", max_attempts=1)
def nested_scope(ctx: pgjobs.JobContext, **payload: Any) -> None:
    """Nests tenant() blocks inside the job's own transaction, recording the
    scope at each step, then which organizations the job can still see."""
    conn = ctx.conn
    assert ctx.organization is not None
    steps = [_scope(conn)]
    with pgjobs.tenant(conn, ctx.organization):
        steps.append(_scope(conn))
        with pgjobs.tenant(conn, payload["other"]):
            steps.append(_scope(conn))
        steps.append(_scope(conn))
    steps.append(_scope(conn))
    seen = sorted({r[0] for r in conn.execute("select organization from pgjobs.jobs")})
    conn.execute("insert into scope_trace values (%s, %s, %s)", (ctx.id, steps, seen))
