"""Canceling a running job stops it, whether or not its handler cooperates."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgjobs
from tests.support import queries, workers

pytestmark = pytest.mark.slow

WaitFor = Callable[..., Any]


def _ticks(dsn: str, job_id: int) -> int | None:
    return queries.scalar(dsn, "select n from lc_ticks where job_id = %s", (job_id,))


def _state(dsn: str, job_id: int) -> str:
    return str(queries.scalar(dsn, "select state from pgjobs.jobs where id = %s", (job_id,)))


def test_cancel_of_running_jobs_stops_cooperative_and_stubborn_handlers(
    dsn: str, wait_for: WaitFor
) -> None:
    workers.prepare(dsn)
    with psycopg.connect(dsn) as conn:
        polite = pgjobs.enqueue(conn, "lc.cooperative", organization="acme").id
        stubborn = pgjobs.enqueue(conn, "lc.stubborn", organization="acme").id
    with workers.workers(dsn) as pool:
        worker = pool.start(processes=2, lease=5, cancel_grace=0.5)
        wait_for(
            lambda: (_ticks(dsn, polite) or 0) > 2 and (_ticks(dsn, stubborn) or 0) > 2,
            timeout=15,
            message="the jobs never got going",
        )
        pids = dict(queries.rows(dsn, "select job_id, pid from lc_runs"))

        with psycopg.connect(dsn, autocommit=True) as conn:
            assert pgjobs.cancel(conn, polite) == "running"
            assert pgjobs.cancel(conn, stubborn) == "running"
            assert pgjobs.cancel(conn, stubborn) == "running"  # already being canceled
        wait_for(
            lambda: _state(dsn, polite) == "canceled" and _state(dsn, stubborn) == "canceled",
            timeout=10,
            message="the running jobs did not end canceled",
        )

        for job_id in (polite, stubborn):
            ticks = _ticks(dsn, job_id)
            assert queries.holds_for(lambda j=job_id, n=ticks: _ticks(dsn, j) == n, 0.5), (
                f"job {job_id} still writes after its cancel"
            )
        # The cooperative handler returned and its process goes on; the stubborn
        # one's process was killed after the grace and replaced.
        assert pids[polite] in worker.children()
        assert workers.pid_gone(pids[stubborn])
        wait_for(lambda: len(worker.children()) == 2, timeout=5)

    rows = queries.rows(
        dsn,
        """
        select id, state, attempt, canceled_by, last_error_class, finished_at is not null
          from pgjobs.jobs order by id""",
    )
    assert rows == [
        (polite, "canceled", 1, "postgres", "canceled", True),
        (stubborn, "canceled", 1, "postgres", "canceled", True),
    ]
    events = queries.rows(
        dsn,
        """
        select job_id, attempt, from_state, to_state, error_class from pgjobs.job_events
         where from_state = 'running' order by job_id""",
    )
    assert events == [
        (polite, 1, "running", "canceled", "canceled"),
        (stubborn, 1, "running", "canceled", "canceled"),
    ]
    # One attempt each: a canceled job is never retried.
    assert queries.rows(dsn, "select job_id, count(*) from lc_runs group by 1 order by 1") == [
        (polite, 1),
        (stubborn, 1),
    ]


def test_cancel_of_a_finished_job_is_refused(dsn: str, wait_for: WaitFor) -> None:
    workers.prepare(dsn)
    with psycopg.connect(dsn) as conn:
        done = pgjobs.enqueue(conn, "lc.work", organization="acme").id
        queued = pgjobs.enqueue(conn, "lc.work", organization="acme", delay=3600).id
    with workers.workers(dsn) as pool:
        pool.start(processes=1)
        wait_for(lambda: _state(dsn, done) == "completed", timeout=15)

    with psycopg.connect(dsn) as conn:
        assert pgjobs.cancel(conn, queued) == "canceled"
        conn.commit()
        for job_id in (done, queued):
            with pytest.raises(pgjobs.InvalidTransition):
                pgjobs.cancel(conn, job_id)
            conn.rollback()
    assert queries.rows(dsn, "select state, canceled_by from pgjobs.jobs order by id") == [
        ("completed", None),
        ("canceled", "postgres"),
    ]

    cli = subprocess.run(
        [sys.executable, "-m", "pgjobs.cli", "cancel", str(done), "--dsn", dsn],
        cwd=workers.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 1, cli
    assert "completed" in cli.stderr
    assert _state(dsn, done) == "completed"
