"""Decisions the SQL makes in several places are written once, and naming them
costs the hot paths nothing: the planner still serves each from its index."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow

from pgjobs import sql
from pgjobs.states import TERMINAL, State
from tests.support import factories

Conn = psycopg.Connection[DictRow]


def test_is_finished_names_exactly_the_terminal_states(conn: Conn) -> None:
    rows = conn.execute(
        "select s, pgjobs.is_finished(s) as finished from unnest(%s::text[]) s",
        [[s.value for s in State]],
    ).fetchall()
    assert {r["s"] for r in rows if r["finished"]} == {s.value for s in TERMINAL}
    assert len(rows) == 7


@pytest.mark.parametrize(
    ("cancel_requested", "permanent", "attempt", "max_attempts", "expected"),
    [
        (True, False, 1, 5, "canceled"),
        (True, True, 5, 5, "canceled"),  # a requested cancel wins over everything
        (False, True, 1, 5, "dead"),
        (False, False, 5, 5, "dead"),
        (False, False, 6, 5, "dead"),
        (False, False, 4, 5, "retrying"),
    ],
)
def test_failure_state_decides_how_a_failed_attempt_ends(
    conn: Conn,
    cancel_requested: bool,
    permanent: bool,
    attempt: int,
    max_attempts: int,
    expected: str,
) -> None:
    row = conn.execute(
        "select pgjobs.failure_state(%s, %s, %s, %s) as state",
        (cancel_requested, permanent, attempt, max_attempts),
    ).fetchone()
    assert row == {"state": expected}


def test_the_lease_rescue_ends_jobs_as_failure_state_decides(conn: Conn) -> None:
    factories.ensure_type(conn)
    conn.execute(
        "update pgjobs.job_types set max_attempts = 2 where name = %s", [factories.JOB_TYPE]
    )
    first = factories.make_job(conn, "running")  # attempt 1 of 2: retries
    spent = factories.make_job(conn, "running")
    conn.execute("update pgjobs.jobs set attempt = 2 where id = %s", [spent])
    asked = factories.make_job(conn, "running")
    conn.execute("update pgjobs.jobs set cancel_requested_at = now() where id = %s", [asked])
    conn.execute(
        "update pgjobs.jobs set lease_expires_at = now() - interval '1 minute' where id = any(%s)",
        [[first, spent, asked]],
    )
    rescued = conn.execute(sql.query("lease_rescue"), {"now": None}).fetchall()
    states = {r["id"]: r["state"] for r in rescued}
    assert states == {first: "retrying", spent: "dead", asked: "canceled"}
    finished = conn.execute(
        "select id, finished_at is not null as finished, run_at > now() as later"
        " from pgjobs.jobs where id = any(%s)",
        [[first, spent, asked]],
    ).fetchall()
    assert {r["id"]: (r["finished"], r["later"]) for r in finished} == {
        first: (False, True),  # runs again after a backoff
        spent: (True, False),
        asked: (True, False),
    }


def test_skipped_inputs_are_noted_and_taken_once(conn: Conn) -> None:
    conn.execute("select pgjobs.skipped_inputs_take()")
    conn.execute("select pgjobs.skipped_input_note(3), pgjobs.skipped_input_note(7)")
    taken = conn.execute("select pgjobs.skipped_inputs_take() as positions").fetchone()
    again = conn.execute("select pgjobs.skipped_inputs_take() as positions").fetchone()
    assert taken == {"positions": [3, 7]}
    assert again == {"positions": []}


def test_enqueue_jobs_maps_duplicates_after_an_earlier_skipped_insert(conn: Conn) -> None:
    """A note left by an earlier plain INSERT of the transaction is not read as
    one of enqueue_jobs' own duplicates."""
    factories.ensure_type(conn)
    insert = "insert into pgjobs.jobs (job_type, dedup_key) values (%s, 'k')"
    conn.execute(insert, [factories.JOB_TYPE])
    conn.execute(insert, [factories.JOB_TYPE])  # skipped: a duplicate, noted with no position
    jobs = [{"job_type": factories.JOB_TYPE, "dedup_key": k} for k in ("a", "k", "b")]
    rows = conn.execute(
        "select ord, id, duplicate from pgjobs.enqueue_jobs(%s::jsonb)", [json.dumps(jobs)]
    ).fetchall()
    assert [r["duplicate"] for r in rows] == [False, True, False]
    keys = conn.execute(
        "select id, dedup_key from pgjobs.jobs where id = any(%s)", [[r["id"] for r in rows]]
    ).fetchall()
    assert {r["id"]: r["dedup_key"] for r in keys} == {
        rows[0]["id"]: "a",
        rows[1]["id"]: "k",
        rows[2]["id"]: "b",
    }


def _plan(conn: Conn, query: str, params: dict[str, Any]) -> str:
    rows = conn.execute(f"explain (format json) {query}", params).fetchall()  # type: ignore[arg-type]
    return json.dumps(rows[0]["QUERY PLAN"])


def test_prune_reads_finished_jobs_through_their_partial_index(conn: Conn) -> None:
    """is_finished is inlined, so the prune still matches jobs_finished_idx."""
    conn.execute("set local enable_seqscan = off")  # a small table: only a usable index is used
    plan = _plan(conn, sql.query("job_prune_batch"), {"older_than_seconds": 60, "batch_size": 10})
    assert "finished_at_idx" in plan  # jobs_finished_idx, on each partition
    assert '"Function Name": "is_finished"' not in plan


@pytest.mark.slow
def test_claim_on_a_backlog_walks_the_runnable_index(dsn: str) -> None:
    """On a seeded backlog a 10-job claim reads the runnable index, a few
    entries per priority, and never the table from end to end."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        factories.ensure_type(conn)
        conn.execute(
            "select pgjobs.enqueue_jobs((select jsonb_agg(jsonb_build_object("
            " 'job_type', %s::text, 'priority', g %% 4)) from generate_series(1, 5000) g))",
            [factories.JOB_TYPE],
        )
        conn.execute("analyze pgjobs.jobs")
    with psycopg.connect(dsn) as conn:
        claimed = conn.execute(
            sql.query("job_claim"),
            {"worker": "w", "queues": ["default"], "n": 10, "lease_seconds": 30.0, "now": None,
             "job_types": [factories.JOB_TYPE]},
        ).fetchall()
        reads = conn.execute(
            # jobs_runnable_idx, on jobs_active
            "select pg_stat_get_xact_numscans(%(idx)s::regclass),"
            "       pg_stat_get_xact_tuples_returned(%(idx)s::regclass),"
            "       pg_stat_get_xact_numscans('pgjobs.jobs_active'::regclass)",
            {"idx": "pgjobs.jobs_active_priority_run_at_id_idx"},
        ).fetchone()
        conn.rollback()
    assert len(claimed) == 10
    assert reads is not None
    index_scans, index_entries, table_scans = reads
    assert index_scans >= 1
    assert index_entries <= 4 * 10
    assert table_scans == 0


@pytest.mark.parametrize("statement", ["job_fail_many", "lease_rescue"])
def test_the_failure_decision_is_inlined_into_the_statement(conn: Conn, statement: str) -> None:
    """No function call per failed row, and one backoff drawn per row."""
    params: dict[str, Any] = {
        "now": None,
        "ids": [1],
        "tokens": [1],
        "error_classes": ["boom"],
        "messages": ["m"],
        "tracebacks": [None],
        "permanent": [False],
        "durations": [1.0],
    }
    rows = conn.execute(f"explain (verbose) {sql.query(statement)}", params).fetchall()  # type: ignore[arg-type]
    plan = "\n".join(r["QUERY PLAN"] for r in rows)
    assert "failed_attempt" not in plan
    assert "failure_state" not in plan
    assert plan.count("random()") == 1
