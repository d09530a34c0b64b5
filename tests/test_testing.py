"""pgjobs.testing: jobs run inline, through the worker's own claim and completion."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

import pgjobs
import tests.support.handlers  # noqa: F401 - registers the job types
from tests.support.handlers import SIDE_TABLE


@pytest.fixture
def auto(dsn: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SIDE_TABLE)
        yield conn


def test_run_job_completes_it_and_stores_the_result(auto: psycopg.Connection[Any]) -> None:
    job = pgjobs.enqueue(auto, "t.add", {"a": 2, "b": 3})
    row = pgjobs.testing.run_job(auto, job.id)
    assert (row["state"], row["attempt"], row["result"]["sum"]) == ("completed", 1, 5)
    assert [h["to_state"] for h in pgjobs.history(auto, job.id)] == ["running", "completed"]


def test_run_job_writes_through_ctx_conn_and_runs_a_delayed_job_now(
    auto: psycopg.Connection[Any],
) -> None:
    job = pgjobs.enqueue(auto, "t.record", organization="acme", delay=3600)
    assert pgjobs.testing.run_job(auto, job.id)["state"] == "completed"
    side = auto.execute("select job_id, organization, attempt from side").fetchall()
    assert side == [(job.id, "acme", 1)]


def test_run_job_refuses_a_finished_job_and_names_a_missing_one(
    auto: psycopg.Connection[Any],
) -> None:
    job = pgjobs.enqueue(auto, "t.noop")
    pgjobs.testing.run_job(auto, job.id)
    with pytest.raises(pgjobs.InvalidTransition, match="completed"):
        pgjobs.testing.run_job(auto, job.id)
    with pytest.raises(pgjobs.JobNotFound):
        pgjobs.testing.run_job(auto, 2**40)


def test_drain_runs_retries_once_due_and_counts_how_attempts_ended(
    auto: psycopg.Connection[Any],
) -> None:
    ok = [pgjobs.enqueue(auto, "t.noop").id for _ in range(3)]
    failing = pgjobs.enqueue(auto, "t.always_fails").id  # max_attempts 4
    other = pgjobs.enqueue(auto, "t.other_queue").id
    # At one instant: every due job once; the failure is retrying afterwards.
    # (On the moving clock a retry whose jitter drew a delay of a millisecond
    # or two would come due within the same drain.)
    row = auto.execute("select now()").fetchone()
    assert row is not None
    assert pgjobs.testing.drain(auto, queues=["default"], now=row[0]) == {
        "completed": 3,
        "retrying": 1,
    }
    assert pgjobs.get(auto, failing)["state"] == "retrying"
    # A clock past every backoff runs the remaining attempts.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert pgjobs.testing.drain(auto, queues=["default"], now=later) == {
        "retrying": 2,
        "dead": 1,
    }
    assert pgjobs.get(auto, failing)["attempt"] == 4
    assert pgjobs.get(auto, other)["state"] == "queued"  # another queue
    assert pgjobs.testing.drain(auto) == {"completed": 1}
    assert {pgjobs.get(auto, i)["state"] for i in ok} == {"completed"}


def test_drain_inside_a_rolled_back_transaction_leaves_nothing(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        job = pgjobs.enqueue(conn, "t.noop")
        assert pgjobs.testing.drain(conn) == {"completed": 1}
        conn.rollback()
        with pytest.raises(pgjobs.JobNotFound):
            pgjobs.get(conn, job.id)
