"""What a dead worker leaves on the server: its sessions (ended by the rescue,
so a retry never waits behind a dead attempt's locks), and the dead tuples a
long transaction keeps (vacuumed once, not over and over)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import structlog

import pgjobs
from pgjobs.worker.maintenance import Vacuum
from tests.support import factories, fault_handlers, queries, workers

WaitFor = Callable[..., Any]


@pytest.mark.slow
def test_the_retry_of_a_killed_worker_job_does_not_wait_behind_its_locks(
    dsn: str, wait_for: WaitFor
) -> None:
    workers.prepare(dsn)
    fault_handlers.prepare(dsn)
    with psycopg.connect(dsn) as conn:
        job_id = pgjobs.enqueue(conn, "lc.lock_then_sleep", organization="acme").id
    extra = ("--import", fault_handlers.MODULE)
    with workers.workers(dsn) as pool:
        dead = pool.start(processes=1, lease=2, extra=extra)
        wait_for(lambda: queries.scalar(dsn, "select count(*) from lc_runs") == 1, timeout=20)
        sleeper = queries.scalar(
            dsn, "select pid from pg_stat_activity where query like 'select pg_sleep(600)%'"
        )
        assert sleeper is not None  # the first attempt sleeps in the server, lock held
        dead.signal_all(signal.SIGKILL)  # supervisor and processes at once
        killed_at = time.monotonic()

        pool.start(processes=1, lease=2, extra=extra)
        # The lease runs out after 2 s; the retry then locks the row at once.
        # Behind the dead attempt it would wait for its statement timeout (61 s).
        wait_for(
            lambda: (
                queries.scalar(dsn, "select state from pgjobs.jobs where id = %s", (job_id,))
                == "completed"
            ),
            timeout=25,
            message="the retry waited behind the dead attempt's lock",
        )
        assert time.monotonic() - killed_at < 25
    assert (
        queries.scalar(dsn, "select count(*) from pg_stat_activity where pid = %s", (sleeper,)) == 0
    )
    assert queries.rows(
        dsn, "select state, attempt, result from pgjobs.jobs where id = %s", (job_id,)
    ) == [("completed", 2, {"attempt": 2})]


def _vacuum_count(dsn: str) -> int:
    return int(
        queries.scalar(
            dsn,
            "select vacuum_count from pg_stat_user_tables"
            " where relid = 'pgjobs.jobs_active'::regclass",
        )
    )


def _dead_tuples(dsn: str) -> int:
    return int(
        queries.scalar(
            dsn,
            "select n_dead_tup from pg_stat_user_tables"
            " where relid = 'pgjobs.jobs_active'::regclass",
        )
    )


def test_a_long_transaction_does_not_make_the_worker_vacuum_over_and_over(
    dsn: str, wait_for: WaitFor
) -> None:
    with psycopg.connect(dsn) as conn:
        factories.ensure_type(conn)
        conn.execute(
            "insert into pgjobs.jobs (job_type) select %s from generate_series(1, 400)",
            (factories.JOB_TYPE,),
        )
    # A snapshot older than the dead tuples about to be made: no vacuum can
    # remove them while it is held.
    long = psycopg.connect(dsn)
    long.execute("begin isolation level repeatable read")
    long.execute("select count(*) from pgjobs.jobs")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("update pgjobs.jobs set priority = priority")
            conn.execute("update pgjobs.jobs set priority = priority")
        wait_for(lambda: _dead_tuples(dsn) >= 800, timeout=15, message="no dead tuples counted")

        vacuum = Vacuum(structlog.get_logger("test"), "test/vacuum", threshold=100)
        with psycopg.connect(dsn, autocommit=True) as worker:

            def check() -> bool:
                vacuum.next_check = 0.0  # as if a second had passed
                return vacuum.if_due(worker)

            assert check()  # the first look: this worker never vacuumed
            assert _vacuum_count(dsn) == 1
            assert _dead_tuples(dsn) >= 800  # it removed nothing: the snapshot holds them
            assert [check() for _ in range(5)] == [False] * 5
            assert _vacuum_count(dsn) == 1

            long.rollback()  # the horizon moves: now a vacuum can remove them
            assert check()
            assert _vacuum_count(dsn) == 2
            wait_for(lambda: _dead_tuples(dsn) < 100, timeout=5)
    finally:
        long.close()
