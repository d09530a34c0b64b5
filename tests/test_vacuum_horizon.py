"""The worker vacuums the jobs table only when the vacuum can remove
something: while a transaction left open holds back the
horizon the last vacuum met, dead rows younger than it cannot go, and
another vacuum would only read the table and its indexes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from pgjobs.statements import maintenance
from tests.support import factories

HOLDER = "test/1"


def vacuum_turn(conn: psycopg.Connection[Any], last_horizon: str | None) -> tuple[bool, str | None]:
    due = maintenance.vacuum_turn(
        conn, holder=HOLDER, seconds=60, threshold=1000, scale=0.0, last_horizon=last_horizon
    )
    if due[0]:
        maintenance.lease_release(conn, duties=["vacuum"], holder=HOLDER)
    return due


@pytest.mark.slow
def test_no_second_vacuum_while_the_same_open_transaction_holds_the_horizon(
    dsn: str, wait_for: Callable[..., Any]
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        factories.ensure_type(conn)
        conn.execute("insert into pgjobs.jobs (job_type) select %s from generate_series(1, 1500)",
                     (factories.JOB_TYPE,))
        with psycopg.connect(dsn) as idle:
            held = idle.execute("select pg_current_xact_id()::text").fetchone()
            assert held is not None
            conn.execute("update pgjobs.jobs set progress = 1")  # 1,500 dead row versions
            wait_for(lambda: conn.execute(
                "select n_dead_tup >= 1000 from pg_stat_user_tables"
                " where relid = 'pgjobs.jobs_active'::regclass").fetchone()[0], timeout=20)

            locked, horizon = vacuum_turn(conn, None)
            assert locked and horizon == held[0]  # the open transaction is the horizon
            conn.execute("vacuum pgjobs.jobs_active")
            # The same transaction still holds it: nothing more could go.
            assert vacuum_turn(conn, horizon)[0] is False
        # It ended: the next vacuum can remove what it kept.
        locked, after = vacuum_turn(conn, horizon)
        assert locked and after != horizon


def test_the_workers_vacuum_leaves_the_empty_pages_at_the_end_of_the_unfinished_jobs(
    dsn: str,
) -> None:
    """Truncating them needs jobs_active's ACCESS EXCLUSIVE lock, which any
    claim, completion or reader of the jobs holds off: VACUUM waits up to 5 s
    for it, and the worker running it claims nothing meanwhile."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        factories.ensure_type(conn)
        conn.execute("insert into pgjobs.jobs (job_type) select %s from generate_series(1, 2000)",
                     (factories.JOB_TYPE,))
        conn.execute("update pgjobs.jobs set state = 'running', attempt = 1,"
                     " lease_token = nextval('pgjobs.lease_token_seq')")
        conn.execute("update pgjobs.jobs set state = 'completed', finished_at = now()")

        def size() -> int:
            row = conn.execute("select pg_relation_size('pgjobs.jobs_active')").fetchone()
            assert row is not None
            return int(row[0])

        before = size()
        assert before > 0  # every row there is dead: the whole table could go
        maintenance.vacuum(conn)
        assert size() == before
