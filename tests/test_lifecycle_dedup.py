"""Dedup keys under concurrency, across organizations, and over their window."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg

import pgjobs
from tests.support import lifecycle_handlers as lc
from tests.support import queries, workers

WaitFor = Callable[..., Any]

_BLOCKED = """
select count(*) from pg_stat_activity
 where datname = current_database() and wait_event_type = 'Lock'"""


def _finish(dsn: str, job_id: int) -> None:
    """Runs one job to completion through the worker's own claim and completion."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        claimed = queries.claim_tokens(conn, [lc.QUEUE], lease_seconds=30)
        assert list(claimed) == [job_id]
        done = queries.complete(conn, job_id, claimed[job_id])
        assert done == [(job_id, "completed")]


def test_concurrent_identical_enqueues_create_exactly_one_job(dsn: str, wait_for: WaitFor) -> None:
    workers.prepare(dsn)
    outcomes: dict[int, tuple[pgjobs.EnqueueResult, bool]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(49)

    def enqueue(i: int) -> None:
        try:
            with psycopg.connect(dsn) as conn:
                start.wait(30)
                result = pgjobs.enqueue(
                    conn, "lc.dedup", {"i": i}, organization="acme", dedup_key="report:2026-10"
                )
                keep = i % 3 != 0  # a third of the callers roll back
                conn.commit() if keep else conn.rollback()
                outcomes[i] = (result, keep)
        except BaseException as exc:
            errors.append(exc)

    # A first caller holds the key in an open transaction, so every other one
    # is queued up behind it when it rolls back.
    with psycopg.connect(dsn) as holder:
        first = pgjobs.enqueue(holder, "lc.dedup", organization="acme", dedup_key="report:2026-10")
        assert not first.duplicate
        threads = [threading.Thread(target=enqueue, args=(i,)) for i in range(49)]
        for thread in threads:
            thread.start()
        wait_for(
            lambda: queries.scalar(dsn, _BLOCKED) == 49,
            timeout=30,
            message="the enqueues did not all wait on the key",
        )
        holder.rollback()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(outcomes) == 49

    jobs = queries.rows(dsn, "select id from pgjobs.jobs where dedup_key = 'report:2026-10'")
    assert len(jobs) == 1
    (job_id,) = jobs[0]
    committed = [result for result, keep in outcomes.values() if keep]
    assert [r for r in committed if not r.duplicate] == [pgjobs.EnqueueResult(job_id, False)]
    assert {r.id for r in committed} == {job_id}
    assert queries.scalar(dsn, "select count(*) from pgjobs.dedup_keys") == 1


def test_same_dedup_key_in_two_organizations_makes_two_jobs(dsn: str) -> None:
    workers.prepare(dsn)
    with psycopg.connect(dsn) as conn:
        acme = pgjobs.enqueue(conn, "lc.dedup", organization="acme", dedup_key="k")
        globex = pgjobs.enqueue(conn, "lc.dedup", organization="globex", dedup_key="k")
        again = pgjobs.enqueue(conn, "lc.dedup", organization="globex", dedup_key="k")
    assert not acme.duplicate and not globex.duplicate and acme.id != globex.id
    assert again == pgjobs.EnqueueResult(globex.id, True)


def test_dedup_window_outlives_the_job_and_window_zero_does_not(dsn: str) -> None:
    workers.prepare(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        windowed = pgjobs.enqueue(conn, "lc.dedup", organization="acme", dedup_key="k")
        assert pgjobs.enqueue(conn, "lc.dedup", organization="acme", dedup_key="k") == (
            windowed.id,
            True,
        )
        _finish(dsn, windowed.id)
        # Finished, but inside its 60 s window: still a duplicate.
        assert pgjobs.enqueue(conn, "lc.dedup", organization="acme", dedup_key="k") == (
            windowed.id,
            True,
        )

        unwindowed = pgjobs.enqueue(conn, "lc.dedup_no_window", organization="acme", dedup_key="k")
        # An active job blocks its duplicate even with no window.
        assert pgjobs.enqueue(conn, "lc.dedup_no_window", organization="acme", dedup_key="k") == (
            unwindowed.id,
            True,
        )
        _finish(dsn, unwindowed.id)
        fresh = pgjobs.enqueue(conn, "lc.dedup_no_window", organization="acme", dedup_key="k")
        assert not fresh.duplicate and fresh.id != unwindowed.id
        assert pgjobs.enqueue(conn, "lc.dedup_no_window", organization="acme", dedup_key="k") == (
            fresh.id,
            True,
        )
