"""A worker that lost its lease (SIGSTOP past the lease) can write nothing late."""

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

_JOB_ROW = """
select state, attempt, result, finished_at, worker, progress, last_error
  from pgjobs.jobs where id = %s"""


def test_late_completion_of_a_stopped_worker_changes_nothing(dsn: str, wait_for: WaitFor) -> None:
    workers.prepare(dsn)
    with psycopg.connect(dsn) as conn:
        job_id = pgjobs.enqueue(
            conn, "lc.fenced", {"first_attempt_seconds": 3}, organization="acme"
        ).id
    with workers.workers(dsn) as pool:
        stale = pool.start(processes=1, lease=1)
        wait_for(
            lambda: queries.scalar(dsn, "select pid from lc_runs where job_id = %s", (job_id,)),
            timeout=15,
            message="the first attempt never started",
        )
        pid = workers.worker_pid_of(dsn, job_id)
        assert pid is not None and pid in stale.children()

        workers.signal_pid(pid, signal.SIGSTOP)
        pool.start(processes=1, lease=1)
        wait_for(
            lambda: queries.scalar(
                dsn, "select state = 'completed' from pgjobs.jobs where id = %s", (job_id,)
            ),
            timeout=20,
            message="the second worker did not complete the job",
        )
        settled = queries.rows(dsn, _JOB_ROW, (job_id,))
        assert settled[0][:3] == ("completed", 2, {"attempt": 2, "pid": settled[0][2]["pid"]})
        assert settled[0][2]["pid"] != pid

        workers.signal_pid(pid, signal.SIGCONT)
        # The first attempt now returns; its completion is refused: the lease is
        # lost, and the rescue ended the stopped process's sessions (its
        # transaction with them), which that process meets as a fault it
        # reconnects after.
        wait_for(
            lambda: "job_lease_lost" in stale.output() or "worker_database_fault" in stale.output(),
            timeout=15,
            message="the stopped attempt never tried to complete",
        )
        assert stale.proc.poll() is None and pid in stale.children()

        assert queries.rows(dsn, _JOB_ROW, (job_id,)) == settled
        # What the late attempt wrote through ctx.conn was rolled back with its completion.
        assert queries.rows(
            dsn, "select attempt, pid from lc_done where job_id = %s", (job_id,)
        ) == [(2, settled[0][2]["pid"])]
        history = queries.rows(
            dsn,
            """
            select attempt, from_state, to_state, error_class from pgjobs.job_events
             where job_id = %s order by id""",
            (job_id,),
        )
        assert history == [
            (1, "queued", "running", None),
            (1, "running", "retrying", "lease_expired"),
            (2, "retrying", "running", None),
            (2, "running", "completed", None),
        ]
        # The second attempt was claimed only once the first one's lease (taken
        # at its claim, 1 s) had run out: compare the two claims' own times.
        gap = queries.scalar(
            dsn,
            """
            select extract(epoch from max(at) - min(at)) from pgjobs.job_events
             where job_id = %s and to_state = 'running'""",
            (job_id,),
        )
        assert float(gap) >= 1.0
