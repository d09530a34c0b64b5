"""Rate limits: per job type and organization, enforced at claim time. A job
over its organization's budget waits for the next window (it does not fail),
and other organizations are not slowed. lc.limited allows 5 jobs per 10 s.

The claim takes the time as a parameter, so the next window is reached by
passing a later ``now`` rather than by waiting 10 s."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs.statements.claim import claim
from tests.support import lifecycle_handlers as lc
from tests.support import queries, workers

pytestmark = pytest.mark.slow

WaitFor = Callable[..., Any]
LIMIT = 5
PERIOD = dt.timedelta(seconds=10)
TICK = dt.timedelta(milliseconds=1)


def _enqueue(dsn: str, counts: dict[str, int]) -> dict[str, list[int]]:
    """In one transaction, in the order given: each organization's jobs together."""
    with psycopg.connect(dsn) as conn:
        return {
            org: [
                r.id
                for r in pgjobs.enqueue_many(
                    conn, [{"job_type": "lc.limited", "organization": org}] * n
                )
            ]
            for org, n in counts.items()
        }


def _claim(conn: psycopg.Connection[Any], now: dt.datetime, n: int = 100) -> list[tuple[int, str]]:
    """The worker's claim with an injected clock: (id, organization) of each job claimed."""
    jobs = claim(conn, worker="test/1", queues=[lc.QUEUE], n=n, lease_seconds=60, now=now)
    return [(job.id, job.organization) for job in jobs]


def _db_now(conn: psycopg.Connection[Any]) -> dt.datetime:
    row = conn.execute("select clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _by_state(dsn: str, ids: list[int]) -> dict[str, set[int]]:
    states: dict[str, set[int]] = {}
    for job_id, state in queries.rows(
        dsn, "select id, state from pgjobs.jobs where id = any(%s)", (ids,)
    ):
        states.setdefault(state, set()).add(job_id)
    return states


def test_the_sixth_job_of_an_organization_waits_while_another_organization_runs(
    dsn: str, wait_for: WaitFor
) -> None:
    workers.prepare(dsn)
    jobs = _enqueue(dsn, {"acme": 7, "globex": LIMIT})
    acme, globex = jobs["acme"], jobs["globex"]

    with workers.workers(dsn) as pool:
        pool.start(processes=2)
        wait_for(
            lambda: len(_by_state(dsn, acme + globex).get("completed", ())) == 2 * LIMIT,
            timeout=15,
            message="the jobs within budget did not all run",
        )
        # Every globex job ran although acme's over-budget jobs were ahead of
        # them in the queue; five of acme's ran. Which five is not fixed: two
        # processes' claims lock rows in queue order but take the budget in
        # the order they reach acme's window (one claim's own jobs are granted
        # in queue order: test_each_window_grants_its_budget_per_organization).
        assert _by_state(dsn, globex) == {"completed": set(globex)}
        acme_states = _by_state(dsn, acme)
        assert sorted(acme_states) == ["completed", "queued"]
        assert len(acme_states["completed"]) == LIMIT
        over = sorted(acme_states["queued"])
        assert len(over) == len(acme) - LIMIT
        window_start, used = queries.rows(
            dsn,
            "select window_start, used from pgjobs.rate_windows"
            " where organization = 'acme' and job_type = 'lc.limited'",
        )[0]
        assert used == LIMIT
        # The over-budget jobs wait for the next window: not failed, not run,
        # no attempt counted, due exactly when acme's window ends.
        waiting = queries.rows(
            dsn,
            "select id, state, attempt, run_at, last_error from pgjobs.jobs"
            " where id = any(%s) order by id",
            (over,),
        )
        assert waiting == [(i, "queued", 0, window_start + PERIOD, None) for i in over]
        assert queries.scalar(dsn, "select now() < %s", (window_start + PERIOD,))
        assert (
            queries.scalar(
                dsn, "select count(*) from lc_runs where job_id = any(%s)", (over,)
            )
            == 0
        )
        assert (
            queries.scalar(
                dsn,
                "select count(*) from pgjobs.job_events where job_id = any(%s)",
                (over,),
            )
            == 0
        )

    # The workers are gone; the test claims as a worker, with its own clock.
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert _claim(conn, window_start + PERIOD - TICK) == []
        claimed = _claim(conn, window_start + PERIOD)
    assert sorted(claimed) == [(i, "acme") for i in over]


def test_each_window_grants_its_budget_per_organization(dsn: str) -> None:
    workers.prepare(dsn)
    jobs = _enqueue(dsn, {"acme": 12, "globex": 3})
    acme, globex = jobs["acme"], jobs["globex"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        t0 = _db_now(conn)
        first = _claim(conn, t0)
        # globex's 3 are not held back by acme's 12 ahead of them in the queue.
        assert first == [(i, "acme") for i in acme[:LIMIT]] + [(i, "globex") for i in globex]
        assert _claim(conn, t0 + PERIOD - TICK) == []

        second = _claim(conn, t0 + PERIOD)
        assert second == [(i, "acme") for i in acme[LIMIT : 2 * LIMIT]]
        assert _claim(conn, t0 + 2 * PERIOD - TICK) == []

        # One at a time, as a worker with batch size 1 claims: the budget holds.
        third = _claim(conn, t0 + 2 * PERIOD, n=1) + _claim(conn, t0 + 2 * PERIOD, n=1)
        assert third == [(i, "acme") for i in acme[2 * LIMIT :]]
        assert _claim(conn, t0 + 2 * PERIOD, n=1) == []

    assert _by_state(dsn, acme + globex) == {"running": set(acme + globex)}
    # Nothing waited by failing: every job has exactly its one claim in its history.
    assert queries.rows(
        dsn,
        "select distinct from_state, to_state, attempt from pgjobs.job_events"
        " where job_id = any(%s)",
        (acme + globex,),
    ) == [("queued", "running", 1)]
