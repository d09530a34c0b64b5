"""Timeouts are hard: the attempt's process is killed, whatever the handler is doing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgjobs
from tests.support import queries, workers

pytestmark = pytest.mark.slow

WaitFor = Callable[..., Any]

_PG_SLEEPS = """
select count(*) from pg_stat_activity
 where datname = current_database() and pid <> pg_backend_pid()
   and query like '%%pg_sleep(600)%%'"""


def _ticks(dsn: str, job_id: int) -> int | None:
    return queries.scalar(dsn, "select n from lc_ticks where job_id = %s", (job_id,))


def test_timeout_stops_a_busy_loop_a_sleep_with_a_thread_and_a_query(
    dsn: str, wait_for: WaitFor
) -> None:
    workers.prepare(dsn)
    with psycopg.connect(dsn) as conn:
        ids = {
            name: pgjobs.enqueue(conn, f"lc.{name}", organization="acme").id
            for name in ("spin", "snooze", "pg_snooze", "spin_twice")
        }
    with workers.workers(dsn) as pool:
        worker = pool.start(processes=4, lease=5)
        # The server-side sleep is running before it is stopped.
        wait_for(
            lambda: queries.scalar(dsn, _PG_SLEEPS) == 1,
            timeout=15,
            message="pg_sleep never started",
        )
        wait_for(
            lambda: queries.scalar(
                dsn,
                """
            select count(*) = 4 from pgjobs.jobs where state = 'dead'""",
            ),
            timeout=20,
            message="the timed-out jobs did not all end dead",
        )

        # Nothing the killed attempts started is still going.
        assert queries.scalar(dsn, _PG_SLEEPS) == 0
        for name in ("spin", "snooze", "spin_twice"):
            ticks = _ticks(dsn, ids[name])
            assert ticks is not None and ticks > 1, name
            assert queries.holds_for(lambda n=ticks, j=ids[name]: _ticks(dsn, j) == n, 0.5), (
                f"{name} still writes after its timeout"
            )
        pids = [p for (p,) in queries.rows(dsn, "select pid from lc_runs")]
        assert len(pids) == 5
        assert all(workers.pid_gone(p) for p in pids)
        # Each killed process was replaced.
        wait_for(lambda: len(worker.children()) == 4, timeout=5)
        assert not set(pids) & set(worker.children())
        # The supervisor's kill events carry the job keys, as every job event does.
        kills = [
            event
            for line in worker.output().splitlines()
            if line.startswith("{") and (event := json.loads(line)).get("event") == "job_killed"
        ]
        assert len(kills) == 5
        assert {(e["job_id"], e["job_type"], e["organization"]) for e in kills} == {
            (job_id, f"lc.{name}", "acme") for name, job_id in ids.items()
        }
        assert all(e["attempt"] >= 1 and e["worker"] and e["reason"] == "timeout" for e in kills)

    # The attempt's own transaction was rolled back with it.
    assert queries.scalar(dsn, "select count(*) from lc_done") == 0
    events = queries.rows(
        dsn,
        """
        select j.job_type, e.attempt, e.to_state, e.error_class, e.duration_ms
          from pgjobs.job_events e join pgjobs.jobs j on j.id = e.job_id
         where e.from_state = 'running' order by j.job_type, e.id""",
    )
    assert [e[:4] for e in events] == [
        ("lc.pg_snooze", 1, "dead", "timeout"),
        ("lc.snooze", 1, "dead", "timeout"),
        ("lc.spin", 1, "dead", "timeout"),
        ("lc.spin_twice", 1, "retrying", "timeout"),
        ("lc.spin_twice", 2, "dead", "timeout"),
    ]
    assert all(1900 <= e[4] < 6000 for e in events), events
    jobs = queries.rows(
        dsn,
        "select attempt, max_attempts, last_error_class, finished_at is not null"
        " from pgjobs.jobs where id = %s",
        (ids["spin_twice"],),
    )
    assert jobs == [(2, 2, "timeout", True)]
