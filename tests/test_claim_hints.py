"""The claim walks jobs_runnable_idx from a per-session hint (pgjobs.claim,
50_claim.sql) rather than from the start of each priority: the order stays
priority, then run_at, then id; a job that becomes runnable below a hint is
still claimed (at once when it moved pgjobs.claim_rewinds, else once the hint
expires); and under a held snapshot the entries a claim reads stay bounded
while the dead ones pile up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.support import factories

Q = ["default"]


def claim(conn: psycopg.Connection[Any], n: int = 1, now: str | None = None) -> list[int]:
    rows = conn.execute("select id from pgjobs.claim('w', %s, %s, 60, %s::timestamptz)",
                        (Q, n, now)).fetchall()
    return [r[0] if isinstance(r, tuple) else r["id"] for r in rows]


def enqueue(conn: psycopg.Connection[Any], priority: int = 2, run_at: str | None = None,
            depends_on: list[int] | None = None) -> int:
    row = conn.execute(
        "insert into pgjobs.jobs (job_type, priority, run_at, depends_on)"
        " values (%s, %s, coalesce(%s::timestamptz, now()), %s) returning id",
        (factories.JOB_TYPE, priority, run_at, depends_on)).fetchone()
    assert row is not None
    return int(row[0] if isinstance(row, tuple) else row["id"])


def runnable_entries_read(conn: psycopg.Connection[Any], n: int) -> tuple[list[int], int]:
    """One claim of ``n``, and how many entries of jobs_runnable_idx it read
    (the backend's own counters, taken inside one transaction)."""
    index = "pgjobs.jobs_active_priority_run_at_id_idx"
    count = "select pg_stat_get_xact_tuples_returned(%s::regclass)"
    with conn.transaction():
        before = conn.execute(count, (index,)).fetchone()
        ids = claim(conn, n)
        after = conn.execute(count, (index,)).fetchone()
    assert before is not None and after is not None
    return ids, int(after[0]) - int(before[0])


def complete(conn: psycopg.Connection[Any], ids: list[int]) -> None:
    conn.execute("update pgjobs.jobs set state = 'completed', finished_at = now(),"
                 " lease_token = coalesce(lease_token, 0) where id = any(%s)", (ids,))


def test_claims_keep_priority_then_run_at_then_id_across_hints(conn: Any) -> None:
    factories.ensure_type(conn)
    made = [(p, enqueue(conn, priority=p, run_at=f"2026-01-01 00:00:{s:02d}+00"))
            for s in range(10) for p in (3, 1, 2)]
    expected = [i for _, i in sorted(made, key=lambda m: (m[0], m[1]))]
    taken: list[int] = []
    while batch := claim(conn, 4):
        taken += batch
    assert taken == expected


def test_a_more_urgent_or_older_job_enqueued_after_the_hint_moved_is_claimed_first(
    conn: Any,
) -> None:
    factories.ensure_type(conn)
    for _ in range(5):
        enqueue(conn, run_at="2026-01-01 00:00:00+00")
    first = claim(conn, 2)
    assert len(first) == 2  # the hint of priority 2 now sits at the first of them
    urgent = enqueue(conn, priority=0)
    assert claim(conn, 1) == [urgent]
    # Older than every job the hint passed (an explicit past run_at): it moved
    # claim_rewinds, so the next claim walks its priority whole.
    older = enqueue(conn, run_at="2025-01-01 00:00:00+00")
    assert claim(conn, 1) == [older]


def test_a_job_its_parent_releases_is_claimed_in_its_place(conn: Any) -> None:
    factories.ensure_type(conn)
    parent = enqueue(conn, run_at="2025-06-01 00:00:00+00")
    child = enqueue(conn, run_at="2025-06-01 00:00:01+00", depends_on=[parent])
    later = [enqueue(conn, run_at="2026-01-01 00:00:00+00") for _ in range(3)]
    assert claim(conn, 2) == [parent, later[0]]  # the hint is past the child's run_at
    complete(conn, [parent])
    # Released, it runs from now on (30_state_machine.sql): after the others.
    assert factories.state_of(conn, child) == "queued"
    assert claim(conn, 5) == [*later[1:], child]


def test_a_job_retried_with_its_old_run_at_is_claimed_first(conn: Any) -> None:
    factories.ensure_type(conn)
    old = enqueue(conn, run_at="2025-06-01 00:00:00+00")
    later = [enqueue(conn, run_at="2026-01-01 00:00:00+00") for _ in range(3)]
    assert claim(conn, 2) == [old, later[0]]
    # Given back unstarted (running -> queued) with the run_at it had: below
    # the hint, so it moves claim_rewinds and the next claim walks whole.
    conn.execute("update pgjobs.jobs set state = 'queued' where id = %s", (old,))
    assert claim(conn, 1) == [old]


def test_a_claim_on_a_clock_of_its_own_leaves_no_hint(conn: Any) -> None:
    factories.ensure_type(conn)
    soon = enqueue(conn, run_at="2030-01-01 00:00:00+00")
    assert claim(conn, 1, now="2030-01-02 00:00:00+00") == [soon]
    now_due = enqueue(conn, run_at="2026-01-01 00:00:00+00")
    assert claim(conn, 1) == [now_due]


def test_under_a_clock_held_still_a_job_due_before_the_last_one_taken_is_claimed(
    conn: Any,
) -> None:
    """pgjobs.testing.drain holds its clock still: a retry whose backoff,
    counted from the real now, ends before the run_at of the job last taken
    (and is still ahead of the real clock, so no rewind is counted) is due and
    must be claimed."""
    factories.ensure_type(conn)
    clock = "2099-01-01 00:00:00+00"
    first = enqueue(conn, run_at="2098-06-01 00:00:00+00")
    assert claim(conn, 1, now=clock) == [first]
    earlier = enqueue(conn, run_at="2098-01-01 00:00:00+00")
    assert claim(conn, 1, now=clock) == [earlier]


@pytest.mark.slow
def test_a_job_committed_below_the_hint_is_claimed_once_the_hint_expires(
    dsn: str, wait_for: Callable[..., Any]
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, psycopg.connect(dsn) as late:
        factories.ensure_type(conn)
        # A transaction that enqueues and commits long after its run_at (its
        # now()), so that no claim_rewinds move warns of it: a job the hint passes.
        late_id = enqueue(late, run_at=None)
        row = late.execute("select run_at from pgjobs.jobs where id = %s", (late_id,)).fetchone()
        assert row is not None
        late_run_at = row[0]

        def hint_can_pass_it() -> bool:  # a hint stays claim_hint_lag behind its clock
            r = conn.execute("select clock_timestamp() > %s + pgjobs.claim_hint_lag()"
                             " + interval '0.2 seconds'", (late_run_at,)).fetchone()
            return bool(r and r[0])

        wait_for(hint_can_pass_it, timeout=10, message="the clock never moved on")
        ahead = enqueue(conn)
        assert claim(conn, 1) == [ahead]  # the hint is now past the late job's run_at
        late.commit()
        taken: list[int] = []
        wait_for(lambda: taken.extend(claim(conn, 1)) or late_id in taken,
                 timeout=15, message="the job below the hint was never claimed")
        assert taken == [late_id]


@pytest.mark.slow
def test_under_a_held_snapshot_a_claim_reads_few_entries_however_many_jobs_went_before(
    dsn: str,
) -> None:
    claims, n = 300, 10
    with psycopg.connect(dsn, autocommit=True) as conn:
        factories.ensure_type(conn)
        conn.execute("insert into pgjobs.jobs (job_type, run_at) select %s, now() - interval"
                     " '1 minute' from generate_series(1, %s)", (factories.JOB_TYPE, claims * n))
        conn.execute("vacuum analyze pgjobs.jobs_active")
        with psycopg.connect(dsn) as idle:
            idle.execute("select pg_current_xact_id()")  # holds the xmin horizon
            reads = []
            for _ in range(claims - 10):
                ids, read = runnable_entries_read(conn, n)
                assert len(ids) == n
                complete(conn, ids)
                reads.append(read)
            # A session without a hint walks every dead entry left since the
            # snapshot: the test sees the horizon held.
            with psycopg.connect(dsn, autocommit=True) as fresh:
                _, whole = runnable_entries_read(fresh, n)
            assert whole >= (claims - 10) * n
            # This session's claims read the jobs they take and a few more;
            # one in claim_rescan_after walks whole (hence the median).
            late = sorted(reads[-9:])[4]
            assert late <= 3 * n, reads[-9:]
            assert late <= sorted(reads[:9])[4] + n
