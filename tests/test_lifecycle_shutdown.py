"""SIGTERM: running jobs finish within the grace, the rest go back to the queue."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgjobs
from tests.support import queries, workers

pytestmark = pytest.mark.slow

WaitFor = Callable[..., Any]


def _both_started(dsn: str) -> bool:
    return bool(queries.scalar(dsn, "select count(*) = 2 from lc_runs"))


def test_sigterm_lets_short_jobs_finish_and_returns_long_ones_unattempted(
    dsn: str, wait_for: WaitFor
) -> None:
    workers.prepare(dsn)
    with psycopg.connect(dsn) as conn:
        short = pgjobs.enqueue(conn, "lc.work", {"seconds": 1.5}, organization="acme").id
        long = pgjobs.enqueue(conn, "lc.work", {"seconds": 30}, organization="acme").id
        # Low priority: nobody reaches them before the stop.
        later = [
            pgjobs.enqueue(conn, "lc.work", organization="acme", priority=3).id for _ in range(3)
        ]
    with workers.workers(dsn) as pool:
        worker = pool.start(processes=2, lease=5, grace=3)
        wait_for(lambda: _both_started(dsn), timeout=15, message="the jobs never started")
        processes = worker.children()

        stopped_at = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
        took = time.monotonic() - stopped_at
        assert 2.5 <= took < 8, took  # the grace, not a moment longer than it needs
        assert all(workers.pid_gone(p) for p in processes)

    rows = {
        r[0]: r[1:]
        for r in queries.rows(
            dsn,
            """
        select id, state, attempt, worker is null, lease_expires_at is null, started_at is null
          from pgjobs.jobs""",
        )
    }
    assert rows[short] == ("completed", 1, False, True, False)
    assert rows[long] == ("queued", 0, True, True, True)
    for job_id in later:
        assert rows[job_id] == ("queued", 0, True, True, True)
    assert queries.rows(dsn, "select job_id from lc_done") == [(short,)]
    history = queries.rows(
        dsn,
        """
        select attempt, from_state, to_state, error_class from pgjobs.job_events
         where job_id = %s order by id""",
        (long,),
    )
    assert history == [(1, "queued", "running", None), (0, "running", "queued", None)]


def test_second_sigterm_exits_at_once(dsn: str, wait_for: WaitFor) -> None:
    workers.prepare(dsn)
    with psycopg.connect(dsn) as conn:
        for _ in range(2):
            pgjobs.enqueue(conn, "lc.work", {"seconds": 30}, organization="acme")
    with workers.workers(dsn) as pool:
        worker = pool.start(processes=2, lease=5, grace=60)
        wait_for(lambda: _both_started(dsn), timeout=15, message="the jobs never started")
        processes = worker.children()

        worker.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "worker_stopping" in worker.output(), timeout=5)
        stopped_at = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        worker.wait(5)
        assert time.monotonic() - stopped_at < 2
        assert all(workers.pid_gone(p) for p in processes)

    # Nothing was settled on the way out: the leases bring the jobs back.
    assert (
        queries.rows(
            dsn,
            """
        select state, attempt, lease_expires_at is not null from pgjobs.jobs""",
        )
        == [("running", 1, True)] * 2
    )
