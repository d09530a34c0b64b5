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
    ids = _enqueue(dsn, "aio.sleep", 200, seconds=1.0)
    with workers.workers(dsn) as pool:
        pool.start_args(*async_handlers.worker_args(1, 200))
        # All 200 are in flight at once: each sleeps 1 s, and one process runs them.
        wait_for(
            lambda: _count(dsn, "select count(*) from aio_runs") == 200
            and _count(dsn, "select count(*) from pgjobs.jobs where state = 'running'") > 100,
            timeout=60,
            message="the jobs were not in flight together",
        )
        wait_for(
            lambda: _count(dsn, "select count(*) from pgjobs.jobs where state = 'completed'")
            == 200,
            timeout=60,
            message="not every job completed",
        )
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
        assert job.result is not None and job.result["slept"] == 1.0
        assert float(job.progress or 0) == 100
    # The start hook ran once in that process, and every job used its pool and loop.
    assert _count(dsn, "select count(*) from aio_hooks") == 1
    assert _count(dsn, "select count(distinct (token, loop, pid)) from aio_runs") == 1
    assert _count(
        dsn, "select count(*) from aio_runs r join aio_hooks h using (pid, token, loop)"
    ) == 200
