"""Dependencies: a child waits for its parents, runs in the transaction that
completes the last of them, and is canceled (with the reason) when one fails."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgjobs
from tests.support import lifecycle_handlers as lc
from tests.support import queries, workers

pytestmark = pytest.mark.slow

WaitFor = Callable[..., Any]
ORG = "acme"


def _enqueue(dsn: str, job_type: str = "lc.work", depends_on: tuple[int, ...] = ()) -> int:
    with psycopg.connect(dsn) as conn:
        return pgjobs.enqueue(conn, job_type, organization=ORG, depends_on=depends_on).id


def _states(dsn: str, ids: list[int]) -> list[str]:
    found = dict(queries.rows(dsn, "select id, state from pgjobs.jobs where id = any(%s)", (ids,)))
    return [found[i] for i in ids]


def _claim(dsn: str, *job_ids: int) -> list[int]:
    """Claims the runnable jobs as a worker would (the test is the worker): exactly
    ``job_ids``; returns their lease tokens."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tokens = queries.claim_tokens(conn, [lc.QUEUE])
    assert sorted(tokens) == sorted(job_ids)
    return [tokens[i] for i in job_ids]


def _complete(conn: psycopg.Connection[Any], job_id: int, token: int) -> None:
    """The worker's own completion statement, on the caller's transaction."""
    done = queries.complete(conn, job_id, token)
    assert done == [(job_id, "completed")]


def test_a_permanent_failure_cancels_children_and_grandchildren_with_the_reason(
    dsn: str, wait_for: WaitFor
) -> None:
    workers.prepare(dsn)
    parent = _enqueue(dsn, "lc.doomed")
    children = [_enqueue(dsn, depends_on=(parent,)) for _ in range(2)]
    healthy = _enqueue(dsn)
    # One grandchild hangs off both children, one also off a healthy job.
    grandchildren = [
        _enqueue(dsn, depends_on=tuple(children)),
        _enqueue(dsn, depends_on=(children[1], healthy)),
    ]
    great_grandchild = _enqueue(dsn, depends_on=(grandchildren[0],))
    waiting = [*children, *grandchildren, great_grandchild]
    assert _states(dsn, waiting) == ["waiting"] * len(waiting)

    with workers.workers(dsn) as pool:
        pool.start(processes=2)
        wait_for(
            lambda: _states(dsn, [parent, healthy]) == ["dead", "completed"],
            timeout=15,
            message="the parent did not end dead",
        )

    # Canceled in the transaction that ended the parent dead: nothing to wait for.
    assert _states(dsn, waiting) == ["canceled"] * len(waiting)
    # None of the dependents ever ran.
    ran = {r[0] for r in queries.rows(dsn, "select job_id from lc_runs")}
    assert ran == {parent}
    assert (
        queries.scalar(dsn, "select count(*) from lc_done where job_id = any(%s)", (waiting,)) == 0
    )
    # Each records the dependency that failed it, in the row and in its history.
    reasons = dict(
        (r[0], r[1:])
        for r in queries.rows(
            dsn,
            "select id, canceled_by, last_error, finished_at is not null"
            "  from pgjobs.jobs where id = any(%s)",
            (waiting,),
        )
    )
    expected = {
        children[0]: f"dependency {parent} ended dead",
        children[1]: f"dependency {parent} ended dead",
        grandchildren[0]: f"dependency {children[0]} ended canceled",
        grandchildren[1]: f"dependency {children[1]} ended canceled",
        great_grandchild: f"dependency {grandchildren[0]} ended canceled",
    }
    assert reasons == {i: ("dependency", message, True) for i, message in expected.items()}
    for job_id, message in expected.items():
        history = queries.rows(
            dsn,
            "select from_state, to_state, message from pgjobs.job_events"
            " where job_id = %s order by id",
            (job_id,),
        )
        assert history == [("waiting", "canceled", message)]
    # The dead parent's own history: one attempt, a permanent error.
    assert queries.rows(
        dsn,
        "select to_state, error_class, message from pgjobs.job_events"
        " where job_id = %s and from_state = 'running'",
        (parent,),
    ) == [("dead", "PermanentError", "no such customer")]


def test_a_canceled_parent_cancels_its_dependents_recursively(dsn: str) -> None:
    workers.prepare(dsn)
    parent = _enqueue(dsn)
    child = _enqueue(dsn, depends_on=(parent,))
    grandchild = _enqueue(dsn, depends_on=(child,))
    with psycopg.connect(dsn) as conn:
        assert pgjobs.cancel(conn, parent) == "canceled"
    assert _states(dsn, [parent, child, grandchild]) == ["canceled"] * 3
    assert queries.rows(
        dsn,
        "select canceled_by, last_error from pgjobs.jobs where id = any(%s) order by id",
        ([child, grandchild],),
    ) == [
        ("dependency", f"dependency {parent} ended canceled"),
        ("dependency", f"dependency {child} ended canceled"),
    ]
    # A job enqueued on an already failed parent is born canceled, never runnable.
    late = _enqueue(dsn, depends_on=(parent,))
    assert queries.rows(
        dsn, "select state, canceled_by, last_error from pgjobs.jobs where id = %s", (late,)
    ) == [("canceled", "dependency", f"dependency {parent} ended canceled")]


def test_children_are_queued_in_the_transaction_that_completes_their_parent(dsn: str) -> None:
    workers.prepare(dsn)
    parent = _enqueue(dsn)
    children = [_enqueue(dsn, depends_on=(parent,)) for _ in range(2)]
    (token,) = _claim(dsn, parent)

    with (
        psycopg.connect(dsn) as completing,
        psycopg.connect(dsn, autocommit=True) as other,
    ):

        def seen_by(conn: psycopg.Connection[Any]) -> list[str]:
            rows = conn.execute(
                "select id, state from pgjobs.jobs where id = any(%s)", ([parent, *children],)
            ).fetchall()
            found = dict(rows)
            return [found[i] for i in [parent, *children]]

        _complete(completing, parent, token)
        # Inside the completing transaction the children are already queued...
        assert seen_by(completing) == ["completed", "queued", "queued"]
        # ...and from outside, before the commit, nothing has moved.
        assert seen_by(other) == ["running", "waiting", "waiting"]
        assert other.execute(
            "select count(*) from pgjobs.job_events where job_id = any(%s)", (children,)
        ).fetchone() == (0,)
        # A worker polling meanwhile finds nothing runnable.
        assert queries.claim_tokens(other, [lc.QUEUE], worker="test/2") == {}
        completing.commit()
        assert seen_by(other) == ["completed", "queued", "queued"]
        # One transaction wrote all three rows.
        xmins = other.execute(
            "select distinct xmin::text from pgjobs.jobs where id = any(%s)", ([parent, *children],)
        ).fetchall()
        assert len(xmins) == 1


def test_a_rolled_back_completion_leaves_the_children_waiting(dsn: str) -> None:
    workers.prepare(dsn)
    parent = _enqueue(dsn)
    child = _enqueue(dsn, depends_on=(parent,))
    (token,) = _claim(dsn, parent)
    with psycopg.connect(dsn) as conn:
        _complete(conn, parent, token)
        assert conn.execute("select state from pgjobs.jobs where id = %s", (child,)).fetchone() == (
            "queued",
        )
        conn.rollback()
    assert _states(dsn, [parent, child]) == ["running", "waiting"]


def test_a_child_of_two_parents_is_queued_only_when_the_last_completes(dsn: str) -> None:
    workers.prepare(dsn)
    first, second = _enqueue(dsn), _enqueue(dsn)
    child = _enqueue(dsn, depends_on=(first, second))
    tokens = dict(zip((first, second), _claim(dsn, first, second), strict=True))
    with psycopg.connect(dsn, autocommit=True) as conn:
        _complete(conn, first, tokens[first])
        assert _states(dsn, [first, second, child]) == ["completed", "running", "waiting"]
        _complete(conn, second, tokens[second])
    assert _states(dsn, [first, second, child]) == ["completed", "completed", "queued"]
    assert queries.rows(
        dsn,
        "select from_state, to_state from pgjobs.job_events where job_id = %s order by id",
        (child,),
    ) == [("waiting", "queued")]


def test_two_parents_completing_concurrently_release_their_child(
    dsn: str, wait_for: WaitFor
) -> None:
    """Each completion's check "are all my child's parents completed?" must see
    the other: two transactions that each saw the other parent still running
    would leave the child waiting for ever."""
    workers.prepare(dsn)
    first, second = _enqueue(dsn), _enqueue(dsn)
    child = _enqueue(dsn, depends_on=(first, second))
    tokens = dict(zip((first, second), _claim(dsn, first, second), strict=True))
    errors: list[BaseException] = []

    with psycopg.connect(dsn) as one:
        _complete(one, first, tokens[first])  # uncommitted: the second cannot see it yet

        def complete_second() -> None:
            try:
                with psycopg.connect(dsn, application_name="lc-second") as two:
                    _complete(two, second, tokens[second])
                    two.commit()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=complete_second)
        thread.start()
        # The second completion either runs its check before the first commits
        # (and finishes), or waits for the first on a lock: either way, only
        # then does the first commit.
        wait_for(
            lambda: (
                not thread.is_alive()
                or queries.scalar(
                    dsn,
                    "select count(*) from pg_stat_activity"
                    " where application_name = 'lc-second' and wait_event_type = 'Lock'",
                )
            ),
            timeout=10,
        )
        one.commit()
        thread.join(10)
        assert not thread.is_alive()
    assert errors == []
    assert _states(dsn, [first, second, child]) == ["completed", "completed", "queued"]
    assert queries.rows(
        dsn,
        "select from_state, to_state from pgjobs.job_events where job_id = %s order by id",
        (child,),
    ) == [("waiting", "queued")]


def test_depending_on_a_missing_job_is_invalid_and_writes_nothing(dsn: str) -> None:
    workers.prepare(dsn)
    parent = _enqueue(dsn)
    other_org = _enqueue_for(dsn, "globex")
    counts = (
        "select (select count(*) from pgjobs.jobs), (select count(*) from pgjobs.job_events),"
        " (select count(*) from pgjobs.dedup_keys)"
    )
    before = queries.rows(dsn, counts)
    missing = 2**40
    with psycopg.connect(dsn) as conn:
        for depends_on in ([missing], [parent, missing], [other_org]):
            with pytest.raises(pgjobs.InvalidJob, match="depends_on"):
                pgjobs.enqueue(
                    conn, "lc.dedup", organization=ORG, depends_on=depends_on, dedup_key="k"
                )
            conn.rollback()
        # In a batch, one bad dependency refuses the whole batch.
        with pytest.raises(pgjobs.InvalidJob, match="depends_on"):
            pgjobs.enqueue_many(
                conn,
                [
                    {"job_type": "lc.work", "organization": ORG, "depends_on": [parent]},
                    {"job_type": "lc.work", "organization": ORG, "depends_on": [missing]},
                ],
            )
        conn.rollback()
        # Straight SQL says the same.
        with pytest.raises(psycopg.Error, match="depends_on"):
            conn.execute(
                "select pgjobs.enqueue('lc.work', organization => %s, depends_on => %s)",
                (ORG, [missing]),
            )
        conn.rollback()
    assert queries.rows(dsn, counts) == before


def _enqueue_for(dsn: str, organization: str) -> int:
    with psycopg.connect(dsn) as conn:
        return pgjobs.enqueue(conn, "lc.work", organization=organization).id
