"""The state machine is declared in the database and mirrored in pgjobs.states:
the two agree on every pair of states, and the database refuses every
forbidden transition whoever attempts it."""

from __future__ import annotations

import itertools
import re

import psycopg
import pytest
from psycopg.rows import DictRow

import pgjobs
from pgjobs.errors import translated
from pgjobs.states import ACTIVE, TERMINAL, TRANSITIONS, State
from tests.support import factories

Conn = psycopg.Connection[DictRow]

PAIRS = list(itertools.product(State, State))


def _database_states(conn: Conn) -> set[str]:
    row = conn.execute(
        "select pg_get_constraintdef(oid) as def from pg_constraint "
        "where conrelid = 'pgjobs.jobs'::regclass and conname = 'jobs_state_check'"
    ).fetchone()
    assert row is not None, "pgjobs.jobs has no jobs_state_check constraint"
    return set(re.findall(r"'([a-z_]+)'::text", row["def"]))


def _allowed_in_database(conn: Conn) -> set[tuple[str, str]]:
    rows = conn.execute(
        "select f.s as from_state, t.s as to_state "
        "from unnest(%(states)s::text[]) f(s), unnest(%(states)s::text[]) t(s) "
        "where pgjobs.transition_allowed(f.s, t.s)",
        {"states": [s.value for s in State]},
    ).fetchall()
    return {(r["from_state"], r["to_state"]) for r in rows}


def test_python_states_are_the_states_the_database_accepts(conn: Conn) -> None:
    assert _database_states(conn) == {s.value for s in State}
    assert len(State) == 7
    assert {State.COMPLETED, State.DEAD, State.CANCELED} == TERMINAL
    assert set(State) == ACTIVE | TERMINAL


def test_python_transitions_match_the_database_for_every_pair_of_states(conn: Conn) -> None:
    in_database = _allowed_in_database(conn)
    in_python = {(a.value, b.value) for a, b in TRANSITIONS}
    assert in_python == in_database
    # And pair by pair, so a disagreement names the pair.
    for a, b in PAIRS:
        assert ((a, b) in TRANSITIONS) == ((a.value, b.value) in in_database), (a, b)


def test_terminal_states_are_left_only_by_an_explicit_retry() -> None:
    for a, b in TRANSITIONS:
        if a in TERMINAL:
            assert b == State.QUEUED, (a, b)
    assert (State.COMPLETED, State.QUEUED) not in TRANSITIONS  # a finished job stays finished
    assert not any(b == State.WAITING for _, b in TRANSITIONS)  # only an insert waits


@pytest.mark.parametrize("source", list(State), ids=str)
def test_database_refuses_every_forbidden_transition_and_allows_the_rest(
    conn: Conn, source: State
) -> None:
    job_id = factories.make_job(conn, source.value)
    for target in State:
        if target == source:
            continue
        with conn.transaction(force_rollback=True):  # each try from the same row
            if (source, target) in TRANSITIONS:
                factories.move(conn, job_id, target.value)
                assert factories.state_of(conn, job_id) == target.value
            else:
                with pytest.raises(psycopg.Error) as refused:
                    factories.move(conn, job_id, target.value)
                assert refused.value.sqlstate == "PJ003", (source, target, refused.value)
                assert f"from {source.value} to {target.value}" in str(refused.value)
        assert factories.state_of(conn, job_id) == source.value


def test_completed_to_running_is_refused_as_invalid_transition(conn: Conn) -> None:
    job_id = factories.make_job(conn, "completed")
    with (
        conn.transaction(force_rollback=True),
        pytest.raises(pgjobs.InvalidTransition),
        translated(),
    ):
        factories.move(conn, job_id, "running")
    assert factories.state_of(conn, job_id) == "completed"


def test_dead_to_completed_is_refused_even_with_a_bulk_update(conn: Conn) -> None:
    dead = factories.make_job(conn, "dead")
    running = factories.make_job(conn, "running")
    # One statement over an allowed and a forbidden row: all or nothing.
    with conn.transaction(force_rollback=True), pytest.raises(psycopg.Error) as refused:
        conn.execute(
            "update pgjobs.jobs set state = 'completed' where id = any(%s)", ([dead, running],)
        )
    assert refused.value.sqlstate == "PJ003"
    assert factories.state_of(conn, dead) == "dead"
    assert factories.state_of(conn, running) == "running"


def test_an_update_that_keeps_the_state_is_not_a_transition(conn: Conn) -> None:
    job_id = factories.make_job(conn, "completed")
    conn.execute(
        "update pgjobs.jobs set state = 'completed', result = '{}' where id = %s", (job_id,)
    )
    assert factories.state_of(conn, job_id) == "completed"


def test_cancel_of_a_finished_job_and_retry_of_a_live_one_are_refused(conn: Conn) -> None:
    completed = factories.make_job(conn, "completed")
    queued = factories.make_job(conn, "queued")
    with conn.transaction(force_rollback=True), pytest.raises(pgjobs.InvalidTransition):
        pgjobs.cancel(conn, completed)
    with conn.transaction(force_rollback=True), pytest.raises(pgjobs.InvalidTransition):
        pgjobs.retry(conn, queued)
    assert factories.state_of(conn, completed) == "completed"
    assert factories.state_of(conn, queued) == "queued"


def test_every_transition_leaves_one_history_row(conn: Conn) -> None:
    job_id = factories.make_job(conn, "dead")
    assert pgjobs.retry(conn, job_id) == "queued"
    rows = pgjobs.history(conn, job_id)
    assert [(r["from_state"], r["to_state"]) for r in rows] == [
        ("queued", "running"),
        ("running", "dead"),
        ("dead", "queued"),
    ]
    for a, b in [(r["from_state"], r["to_state"]) for r in rows]:
        assert (State(a), State(b)) in TRANSITIONS


def test_the_state_trigger_reads_each_transition_row_once_whatever_came_first(
    conn: Conn,
) -> None:
    """The trigger pairs old and new rows in one pass of each, even in a
    session whose first update moved one row (a worker's first claim), from
    which Postgres sizes the transition tables of its cached plan: a nested
    loop there read the old rows once per new row."""
    ids = [factories.make_job(conn, "queued") for _ in range(21)]
    plans: list[str] = []
    conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
    conn.execute("load 'auto_explain'")
    for setting, value in (("log_min_duration", "0"), ("log_nested_statements", "on"),
                           ("log_analyze", "on"), ("log_timing", "off")):
        conn.execute("select set_config(%s, %s, true)", (f"auto_explain.{setting}", value))
    conn.execute("set local client_min_messages = log")
    factories.move(conn, ids[0], "running")  # the session's first: one row
    plans.clear()
    conn.execute("update pgjobs.jobs set state = 'running', attempt = attempt + 1,"
                 " lease_token = 1 where id = any(%s)", (ids[1:],))
    conn.execute("set local client_min_messages = notice")
    [pairing] = [p for p in plans if "from new_rows n" in p]
    scans = re.findall(r"Named Tuplestore Scan .*\(actual rows=(\d+) loops=(\d+)\)", pairing)
    assert scans and all(s == ("20", "1") for s in scans), pairing
