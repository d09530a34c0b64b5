"""Async handlers in the worker: one event loop per process, ``--concurrency``
jobs in flight on it, and every per-job guarantee kept (real processes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgjobs
from tests.support import async_handlers, queries, workers

pytestmark = pytest.mark.slow

WaitFor = Callable[..., Any]


def _enqueue(dsn: str, job_type: str, count: int, **payload: Any) -> list[int]:
    with psycopg.connect(dsn) as conn:
        jobs = [{"job_type": job_type, "payload": payload, "organization": "acme"}] * count
        return [r.id for r in pgjobs.enqueue_many(conn, jobs)]


def _count(dsn: str, sql: str, *args: Any) -> int:
    return int(queries.scalar(dsn, sql, args or None) or 0)


def test_200_concurrent_async_jobs_in_one_process_complete_once_each_on_one_loop(
    dsn: str, wait_for: WaitFor
) -> None:
    async_handlers.prepare(dsn)
    ids = _enqueue(dsn, "aio.sleep", 200, seconds=2.0)
    with workers.workers(dsn) as pool:
        pool.start_args(*async_handlers.worker_args(1, 200))
        wait_for(
            lambda: _count(dsn, "select count(*) from pgjobs.jobs where state = 'completed'")
            == 200,
            timeout=60,
            message="not every job completed",
        )
    # All were in flight at once: when the last one started (its run's row),
    # more than half had started and not finished yet. Read from the rows after
    # the fact, so that no poll has to catch the moment on a loaded machine.
    in_flight = _count(
        dsn,
        "select count(*) from pgjobs.jobs"
        " where finished_at > (select max(at) from aio_runs)",
    )
    assert in_flight > 100, f"only {in_flight} of 200 jobs were in flight together"
    # Once each: one run per job, one attempt, one completion in the history.
    assert _count(dsn, "select count(distinct job_id) from aio_runs") == 200
    assert _count(dsn, "select count(*) from aio_runs") == 200
    assert _count(dsn, "select max(attempt) from pgjobs.jobs") == 1
    completions = _count(
        dsn, "select count(*) from pgjobs.job_events where to_state = 'completed'"
    )
    assert completions == 200
    with psycopg.connect(dsn) as conn:
        job = pgjobs.get(conn, ids[0])
        assert job.result is not None and job.result["slept"] == 2.0
        assert float(job.progress or 0) == 100
    # The start hook ran once in that process, and every job used its pool and loop.
    assert _count(dsn, "select count(*) from aio_hooks") == 1
    assert _count(dsn, "select count(distinct (token, loop, pid)) from aio_runs") == 1
    assert _count(
        dsn, "select count(*) from aio_runs r join aio_hooks h using (pid, token, loop)"
    ) == 200


def _state(dsn: str, job_id: int) -> str:
    return str(queries.scalar(dsn, "select state from pgjobs.jobs where id = %s", (job_id,)))


def _runs(dsn: str, job_id: int) -> int:
    return _count(dsn, "select count(*) from aio_runs where job_id = %s", job_id)


def _errors(dsn: str, job_id: int) -> list[str]:
    rows = queries.rows(
        dsn,
        "select error_class from pgjobs.job_events where job_id = %s and error_class is not null"
        " order by id",
        (job_id,),
    )
    return [row[0] for row in rows]


def test_cancel_and_timeout_stop_the_task_and_end_as_for_sync_jobs_siblings_untouched(
    dsn: str, wait_for: WaitFor
) -> None:
    async_handlers.prepare(dsn)
    [sibling] = _enqueue(dsn, "aio.sleep", 1, seconds=3.0)
    [victim] = _enqueue(dsn, "aio.idle", 1)
    [late] = _enqueue(dsn, "aio.forever", 1)  # its timeout is 1 s, 3 attempts
    with workers.workers(dsn) as pool:
        worker = pool.start_args(*async_handlers.worker_args(1, 5))
        wait_for(lambda: _runs(dsn, victim) == 1 and _runs(dsn, sibling) == 1, timeout=30)
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert pgjobs.cancel(conn, victim) == "running"
        wait_for(lambda: _state(dsn, victim) == "canceled", timeout=10)
        # The timeout cancels its task at each attempt's deadline; the policy retries it.
        wait_for(lambda: _state(dsn, late) == "dead", timeout=40, message="timeouts")
        wait_for(lambda: _state(dsn, sibling) == "completed", timeout=20)
        # No process was killed: the loop stopped both tasks itself.
        assert worker.event("job_killed") is None and worker.event("worker_process_died") is None
    assert _errors(dsn, victim) == ["canceled"]
    assert _errors(dsn, late) == ["timeout"] * 3
    assert _runs(dsn, late) == 3
    assert _runs(dsn, sibling) == 1 and _count(dsn, "select count(*) from aio_hooks") == 1
    with psycopg.connect(dsn) as conn:
        assert pgjobs.get(conn, sibling).attempt == 1


def test_a_task_ignoring_its_cancel_is_killed_with_its_process_and_siblings_come_back_uncounted(
    dsn: str, wait_for: WaitFor
) -> None:
    async_handlers.prepare(dsn)
    [sibling] = _enqueue(dsn, "aio.sleep", 1, seconds=2.0)
    [stubborn] = _enqueue(dsn, "aio.stubborn", 1)
    with workers.workers(dsn) as pool:
        worker = pool.start_args(*async_handlers.worker_args(1, 5))
        wait_for(lambda: _runs(dsn, stubborn) == 1 and _runs(dsn, sibling) == 1, timeout=30)
        with psycopg.connect(dsn, autocommit=True) as conn:
            pgjobs.cancel(conn, stubborn)
        wait_for(lambda: _state(dsn, stubborn) == "canceled", timeout=15)
        # The sibling ran again in the replacement process, its attempt not spent.
        wait_for(lambda: _state(dsn, sibling) == "completed", timeout=30)
        wait_for(lambda: worker.event("job_returned_collateral") is not None, timeout=5)
        collateral = worker.event("job_returned_collateral")
        killed = worker.event("job_killed")
    assert killed is not None and killed["job_id"] == stubborn and killed["reason"] == "canceled"
    assert collateral is not None and collateral["job_id"] == sibling
    assert collateral["killed_for"] == [stubborn]
    assert _runs(dsn, sibling) == 2
    with psycopg.connect(dsn) as conn:
        assert pgjobs.get(conn, sibling).attempt == 1
    assert _errors(dsn, sibling) == []
    # Each process ran the start hook once: the first, and its replacement.
    assert _count(dsn, "select count(*) from aio_hooks") == 2
