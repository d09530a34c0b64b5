"""Postgres faults under a running worker: the server restarts, or the worker's
sessions are killed. The worker reconnects with backoff; every job completes,
and none completes twice.

The restart runs against a private server started for this module (never the
machine's shared one): initdb in a temporary directory, a free port, stopped
with a fast shutdown mid-run and started again on the same port.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgjobs
from bench import servers
from bench.servers import PrivateServer
from pgjobs.migrate import migrate
from tests.support import queries, workers

pytestmark = pytest.mark.slow

WaitFor = Callable[..., Any]


@pytest.fixture(scope="module")
def private_server() -> Iterator[PrivateServer]:
    with servers.private_server("pgjobs-restart-") as server:
        yield server


def _enqueue_once(dsn: str, count: int) -> list[int]:
    with psycopg.connect(dsn) as conn:
        results = pgjobs.enqueue_many(
            conn,
            [
                {"job_type": "lc.once", "payload": {"n": i}, "organization": "acme"}
                for i in range(count)
            ],
        )
    return [r.id for r in results]


def _completed(dsn: str) -> int:
    with contextlib.suppress(psycopg.OperationalError):
        return int(
            queries.scalar(dsn, "select count(*) from pgjobs.jobs where state = 'completed'")
        )
    return -1  # the server is not back yet


def assert_each_completed_once(dsn: str, ids: list[int]) -> None:
    assert dict(queries.rows(dsn, "select state, count(*) from pgjobs.jobs group by state")) == {
        "completed": len(ids)
    }
    # lc_once commits with the completion, one row per job (its primary key).
    assert queries.scalar(dsn, "select count(*) from lc_once") == len(ids)
    assert (
        queries.rows(
            dsn,
            """
        select job_id from pgjobs.job_events where to_state = 'completed'
         group by job_id having count(*) <> 1""",
        )
        == []
    )
    # Each job's one completion is the attempt that wrote its evidence.
    assert (
        queries.rows(
            dsn,
            """
        select j.id from pgjobs.jobs j left join lc_once o on o.job_id = j.id
         where o.attempt is distinct from j.attempt
            or (j.result->>'attempt')::int <> j.attempt""",
        )
        == []
    )


def assert_outages_cost_few_attempts(dsn: str, outages: int, processes: int) -> None:
    """A lost connection costs the attempt in flight, not the batch claimed with
    it: jobs not started yet go back to the queue with their attempt unchanged."""
    retried = queries.scalar(dsn, "select count(*) from pgjobs.jobs where attempt > 1")
    assert retried <= 4 * outages * processes


def test_a_postgres_restart_mid_run_loses_no_job_and_completes_none_twice(
    private_server: PrivateServer, wait_for: WaitFor
) -> None:
    dsn = private_server.dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
    workers.prepare(dsn)
    ids = _enqueue_once(dsn, 2000)

    with workers.workers(dsn) as pool:
        worker = pool.start(processes=2, lease=3)
        wait_for(lambda: _completed(dsn) >= 400, timeout=30, message="the run did not start")

        completed_before = _completed(dsn)
        private_server.stop("fast")
        private_server.start()
        assert completed_before < len(ids)  # the restart came mid-run

        wait_for(
            lambda: _completed(dsn) == len(ids),
            timeout=60,
            message="not every job completed after the restart",
        )
        assert worker.proc.poll() is None
        assert len(worker.children()) == 2
        output = worker.output()
    assert "worker_database_fault" in output and "supervisor_connection_lost" in output

    assert_each_completed_once(dsn, ids)
    assert_outages_cost_few_attempts(dsn, outages=1, processes=2)


def test_killed_worker_sessions_lose_no_job(dsn: str, wait_for: WaitFor) -> None:
    workers.prepare(dsn)
    ids = _enqueue_once(dsn, 1500)
    kill = """
        select count(pg_terminate_backend(pid)) from pg_stat_activity
         where datname = current_database() and application_name like 'pgjobs %%'"""

    with workers.workers(dsn) as pool:
        worker = pool.start(processes=2, lease=3)
        for done in (300, 700, 1100):
            wait_for(lambda: _completed(dsn) >= done, timeout=30)  # noqa: B023
            killed = queries.scalar(dsn, kill)
            assert killed >= 4  # the supervisor's, and per process: control, beacon, job
        assert _completed(dsn) < len(ids)  # the last kill came mid-run
        wait_for(
            lambda: _completed(dsn) == len(ids),
            timeout=60,
            message="not every job completed after their sessions were killed",
        )
        assert worker.proc.poll() is None
        assert len(worker.children()) == 2

    assert_each_completed_once(dsn, ids)
    assert_outages_cost_few_attempts(dsn, outages=3, processes=2)
