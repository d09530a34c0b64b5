"""Worker processes that die: every job still completes, and none completes twice."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgjobs
from tests.support import queries, workers

pytestmark = pytest.mark.slow

WaitFor = Callable[..., Any]


def _enqueue_work(dsn: str, count: int, seconds: float) -> list[int]:
    with psycopg.connect(dsn) as conn:
        results = pgjobs.enqueue_many(
            conn,
            [
                {
                    "job_type": "lc.work",
                    "payload": {"seconds": seconds, "n": i},
                    "organization": "acme",
                }
                for i in range(count)
            ],
        )
    return [r.id for r in results]


def _completed(dsn: str) -> int:
    return int(queries.scalar(dsn, "select count(*) from pgjobs.jobs where state = 'completed'"))


def _started_running_job(dsn: str) -> int | None:
    """A job whose handler has started and is still running."""
    return queries.scalar(
        dsn,
        """
        select j.id from pgjobs.jobs j
         where j.state = 'running'
           and exists (select 1 from lc_runs r where r.job_id = j.id and r.attempt = j.attempt)
         order by j.id limit 1""",
    )


def assert_each_completed_once(dsn: str, ids: list[int]) -> None:
    states = dict(queries.rows(dsn, "select state, count(*) from pgjobs.jobs group by state"))
    assert states == {"completed": len(ids)}
    # lc_done is written in the completion's own transaction, without a unique
    # key: a second completion of any job would leave a second row.
    done = queries.rows(
        dsn, "select job_id, count(*) from lc_done group by job_id having count(*) > 1"
    )
    assert done == []
    assert queries.scalar(dsn, "select count(distinct job_id) from lc_done") == len(ids)
    twice = queries.rows(
        dsn,
        """
        select job_id from pgjobs.job_events where to_state = 'completed'
         group by job_id having count(*) <> 1""",
    )
    assert twice == []
    assert queries.scalar(
        dsn, "select count(*) from pgjobs.job_events where to_state = 'completed'"
    ) == len(ids)
    # Each job's recorded completion is its last attempt's.
    mismatched = queries.rows(
        dsn,
        """
        select j.id from pgjobs.jobs j join lc_done d on d.job_id = j.id
         where d.attempt <> j.attempt or (j.result->>'attempt')::int <> j.attempt""",
    )
    assert mismatched == []


def test_kill_9_of_a_worker_process_loses_no_job_and_completes_none_twice(
    dsn: str, wait_for: WaitFor
) -> None:
    workers.prepare(dsn)
    ids = _enqueue_work(dsn, 60, seconds=0.1)
    with workers.workers(dsn) as pool:
        worker = pool.start(processes=2, lease=2)
        victim_job = wait_for(
            lambda: _started_running_job(dsn), timeout=15, message="no job started"
        )
        victim = workers.worker_pid_of(dsn, victim_job)
        assert victim is not None and victim in worker.children()

        workers.signal_pid(victim, signal.SIGKILL)

        wait_for(
            lambda: _completed(dsn) == len(ids),
            timeout=30,
            message="not every job completed after the kill",
        )
        # The supervisor replaced the process it lost.
        wait_for(lambda: len(worker.children()) == 2, timeout=5)
        assert victim not in worker.children()
        assert worker.proc.poll() is None

    assert_each_completed_once(dsn, ids)
    # The interrupted attempt counted, is in the history as a crash, and ran again.
    crash = queries.rows(
        dsn,
        """
        select attempt, from_state, to_state, worker from pgjobs.job_events
         where job_id = %s and error_class = 'crash'""",
        (victim_job,),
    )
    assert crash == [(1, "running", "retrying", crash[0][3])]
    assert crash[0][3].endswith(f"/{victim}")
    attempts = queries.rows(
        dsn, "select attempt, pid from lc_runs where job_id = %s order by attempt", (victim_job,)
    )
    assert [a for a, _ in attempts] == [1, 2]
    assert attempts[0][1] == victim and attempts[1][1] != victim


def test_jobs_of_a_whole_worker_killed_with_kill_9_come_back_through_their_lease(
    dsn: str, wait_for: WaitFor
) -> None:
    workers.prepare(dsn)
    ids = _enqueue_work(dsn, 8, seconds=1.0)
    with workers.workers(dsn) as pool:
        first = pool.start(processes=2, lease=2)
        wait_for(
            lambda: queries.scalar(
                dsn,
                """
            select count(*) = 2 from pgjobs.jobs j where state = 'running'
               and exists (select 1 from lc_runs r where r.job_id = j.id)""",
            ),
            timeout=15,
            message="two jobs never ran at once",
        )
        held = [
            r[0] for r in queries.rows(dsn, "select id from pgjobs.jobs where state = 'running'")
        ]
        processes = [first.pid, *first.children()]

        first.signal_all(signal.SIGKILL)
        first.wait(5)
        wait_for(lambda: all(workers.pid_gone(p) for p in processes), timeout=5)
        # Nobody is left to give the jobs back: they stay running until their lease ends.
        assert queries.scalar(dsn, "select count(*) from pgjobs.jobs where state = 'running'") == 2

        pool.start(processes=2, lease=2)
        wait_for(
            lambda: _completed(dsn) == len(ids),
            timeout=30,
            message="the jobs of the killed worker did not come back",
        )

    assert_each_completed_once(dsn, ids)
    for job_id in held:
        history = queries.rows(
            dsn,
            """
            select attempt, to_state, error_class from pgjobs.job_events
             where job_id = %s and from_state = 'running' order by id""",
            (job_id,),
        )
        assert history == [(1, "retrying", "lease_expired"), (2, "completed", None)]
