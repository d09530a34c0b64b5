"""The ``pgjobs`` command line, run as a real subprocess with ``--dsn`` against
the test database: exit codes (0 ok, 1 refused by the job's state or not
found, 2 usage or input error), what it prints, and the rows it writes."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import pytest
from psycopg.rows import dict_row

import pgjobs
from pgjobs import db, registry, sql
from tests.support import factories
from tests.support import handlers as _handlers  # registers the t.* job types

assert _handlers

ROOT = Path(__file__).resolve().parent.parent

OK, JOB_FAILURE, USAGE = 0, 1, 2


def pgjobs_cli_all(dsn: str | None, *commands: tuple[str, ...]) -> list[Result]:
    """Runs ``pgjobs ARGS --dsn DSN`` for each command at once, each in a fresh
    interpreter (commands that do not depend on each other need not wait for
    each other's start-up). PGJOBS_DSN is unset so only ``--dsn`` names the
    database."""
    env = {k: v for k, v in os.environ.items() if k != "PGJOBS_DSN"}
    started = []
    for args in commands:
        command = [sys.executable, "-m", "pgjobs.cli", *args]
        if dsn is not None:
            command += ["--dsn", dsn]
        started.append(
            (
                args,
                subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    results = []
    try:
        for args, proc in started:
            stdout, stderr = proc.communicate(timeout=60)
            results.append(Result(args, proc.returncode, stdout, stderr))
    finally:
        for _, proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def pgjobs_cli(dsn: str | None, *args: str) -> Result:
    return pgjobs_cli_all(dsn, args)[0]


class Result(NamedTuple):
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def ok(dsn: str, *args: str) -> str:
    result = pgjobs_cli(dsn, *args)
    assert result.returncode == OK, (args, result.stdout, result.stderr)
    return result.stdout


def refused(dsn: str | None, code: int, *args: str) -> str:
    """Runs a command that must fail with ``code``; returns its stderr."""
    result = pgjobs_cli(dsn, *args)
    assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


@pytest.fixture
def typed(dsn: str) -> str:
    """The test's database with every t.* job type registered (committed)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        registry.sync(conn)
    return dsn


def one(dsn: str, query: str, params: Any = None) -> dict[str, Any]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row


def job_count(dsn: str) -> int:
    return int(one(dsn, "select count(*) as n from pgjobs.jobs")["n"])


# -- migrate --------------------------------------------------------------------


@pytest.mark.slow
def test_migrate_applies_every_migration_then_reports_up_to_date(empty_dsn: str) -> None:
    expected = [f"{m.version:04d}_{m.name}" for m in sql.migrations()[1:]]

    first = ok(empty_dsn, "migrate")
    assert first.strip() == f"applied: {', '.join(expected)}"
    assert ok(empty_dsn, "migrate").strip() == "up to date"

    with psycopg.connect(empty_dsn) as conn:
        versions = [r[0] for r in conn.execute("select version from pgjobs.schema_migrations")]
    assert sorted(versions) == [m.version for m in sql.migrations()[1:]]


# -- enqueue ----------------------------------------------------------------------


@pytest.mark.slow
def test_enqueue_prints_the_id_and_writes_the_job_with_type_defaults(typed: str) -> None:
    out = ok(
        typed,
        "enqueue",
        "t.defaults",
        "--payload",
        '{"to": "ünïcode", "items": [1, 2.5, null], "nested": {"ok": true}}',
        "--org",
        "acme",
        "--priority",
        "0",
        "--delay",
        "5m",
    )
    printed = json.loads(out)
    assert printed == {"id": printed["id"], "duplicate": False}

    row = one(typed, "select * from pgjobs.jobs where id = %s", (printed["id"],))
    assert row["payload"] == {"to": "ünïcode", "items": [1, 2.5, None], "nested": {"ok": True}}
    assert (row["job_type"], row["organization"], row["state"]) == ("t.defaults", "acme", "queued")
    assert row["priority"] == 0  # explicit 0 wins over the type's 1
    # The rest comes from the type: queue="q_defaults", max_attempts=7, timeout=42.
    assert (row["queue"], row["max_attempts"], row["timeout_seconds"]) == ("q_defaults", 7, 42)
    delay = (row["run_at"] - row["created_at"]).total_seconds()
    assert 295 <= delay <= 305


@pytest.mark.slow
def test_enqueue_with_a_dedup_key_twice_returns_the_same_job(typed: str) -> None:
    first = json.loads(ok(typed, "enqueue", "t.noop", "--dedup-key", "k-1"))
    second = json.loads(ok(typed, "enqueue", "t.noop", "--dedup-key", "k-1"))
    assert second == {"id": first["id"], "duplicate": True}
    assert job_count(typed) == 1


BAD_ENQUEUES: list[tuple[tuple[str, ...], str]] = [
    (("t.nope",), "unknown job type"),
    (("t.disabled",), "disabled"),
    (("t.noop", "--payload", "{not json"), "json"),
    (("t.noop", "--payload", "[1, 2]"), "object"),
    (("t.noop", "--priority", "9"), "priority"),
    (("t.noop", "--delay", "soon"), "duration"),
    (("t.noop", "--max-attempts", "0"), "max_attempts"),
    (("t.noop", "--depends-on", "999999"), "depend"),
    (("t.noop", "--bogus-option"), "no such option"),
    ((), "missing argument"),
]


@pytest.mark.slow
def test_enqueue_refuses_bad_input_with_exit_2_and_writes_nothing(typed: str) -> None:
    results = pgjobs_cli_all(typed, *[("enqueue", *args) for args, _ in BAD_ENQUEUES])
    for result, (_, message) in zip(results, BAD_ENQUEUES, strict=True):
        assert result.returncode == USAGE, result
        assert "Traceback" not in result.stderr, result
        assert message in result.stderr.lower(), result
        assert result.stdout == "", result
    assert job_count(typed) == 0


# -- status, list, history ----------------------------------------------------------


@pytest.mark.slow
def test_status_prints_the_job_as_json_and_exits_1_when_there_is_none(typed: str) -> None:
    with psycopg.connect(typed) as conn:
        job_id = pgjobs.enqueue(conn, "t.add", {"a": 1, "b": 2}, organization="acme").id

    status = json.loads(ok(typed, "status", str(job_id)))
    assert status["id"] == job_id
    assert (status["job_type"], status["state"], status["organization"]) == (
        "t.add",
        "queued",
        "acme",
    )
    assert status["payload"] == {"a": 1, "b": 2}
    assert status["attempt"] == 0

    assert "no job" in refused(typed, JOB_FAILURE, "status", str(job_id + 1000))
    refused(typed, USAGE, "status", "not-a-number")


@pytest.mark.slow
def test_list_shows_jobs_newest_first_and_filters_them(typed: str) -> None:
    with psycopg.connect(typed) as conn:
        acme = [pgjobs.enqueue(conn, "t.noop", organization="acme").id for _ in range(3)]
        globex = pgjobs.enqueue(conn, "t.add", {"a": 1, "b": 1}, organization="globex").id
        pgjobs.cancel(conn, acme[0])

    table = ok(typed, "list").splitlines()
    header = table[0].split()
    assert header[:5] == ["id", "job_type", "organization", "queue", "state"]
    assert [int(line.split()[0]) for line in table[1:]] == [globex, *reversed(acme)]

    in_two_days = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    filters: list[tuple[str, ...]] = [
        ("--org", "acme"),
        ("--state", "canceled"),
        ("--type", "t.add"),
        ("--org", "acme", "--limit", "1"),
        ("--since", in_two_days),
        ("--org", "nobody"),
        ("--state", "finished"),
        ("--since", "yesterday-ish"),
    ]
    results = pgjobs_cli_all(typed, *[("list", "--json", *f) for f in filters])
    listed = {}
    for result in results[:6]:
        assert result.returncode == OK, result
        listed[result.args[2:]] = [json.loads(line) for line in result.stdout.splitlines()]

    assert [r["id"] for r in listed["--org", "acme"]] == list(reversed(acme))
    assert [(r["id"], r["state"]) for r in listed["--state", "canceled"]] == [(acme[0], "canceled")]
    assert [r["id"] for r in listed["--type", "t.add"]] == [globex]
    assert [r["id"] for r in listed["--org", "acme", "--limit", "1"]] == [acme[2]]
    assert listed["--since", in_two_days] == []
    assert listed["--org", "nobody"] == []

    bad_state, bad_date = results[6:]
    assert bad_state.returncode == USAGE and "unknown state" in bad_state.stderr, bad_state
    assert bad_date.returncode == USAGE and "Traceback" not in bad_date.stderr, bad_date


@pytest.mark.slow
def test_history_lists_every_transition_of_a_job(typed: str) -> None:
    with psycopg.connect(typed) as conn:
        factories.ensure_type(conn)
        job_id = factories.make_job(conn, "dead")
        conn.execute(
            "update pgjobs.jobs set state = 'queued', attempt = 0 where id = %s", (job_id,)
        )

    rows = [json.loads(line) for line in ok(typed, "history", str(job_id), "--json").splitlines()]
    assert [(r["attempt"], r["from_state"], r["to_state"]) for r in rows] == [
        (1, "queued", "running"),
        (1, "running", "dead"),
        (0, "dead", "queued"),
    ]
    assert {r["job_id"] for r in rows} == {job_id}

    table = ok(typed, "history", str(job_id)).splitlines()
    assert table[0].split()[:4] == ["at", "attempt", "from_state", "to_state"]
    assert len(table) == 4
    assert "dead" in table[2] and "running" in table[2]

    assert "no job" in refused(typed, JOB_FAILURE, "history", str(job_id + 1000))


# -- cancel, retry ------------------------------------------------------------------


@pytest.mark.slow
def test_cancel_and_retry_print_the_new_state_and_exit_1_when_the_state_forbids_them(
    typed: str,
) -> None:
    with psycopg.connect(typed) as conn:
        queued = pgjobs.enqueue(conn, "t.noop").id
        still_queued = pgjobs.enqueue(conn, "t.noop").id
        running = factories.make_job(conn, "running")
        completed = factories.make_job(conn, "completed")
        dead = factories.make_job(conn, "dead")
        canceled, to_requeue = (
            factories.make_job(conn, "canceled"),
            factories.make_job(conn, "canceled"),
        )
    missing = dead + 1000

    # Each command touches a job of its own, so they can all run at once.
    expected: list[tuple[tuple[str, ...], int, str]] = [
        (("cancel", str(queued)), OK, "canceled"),
        (("cancel", str(running)), OK, "running"),  # marked; its worker stops it
        (("cancel", str(canceled)), JOB_FAILURE, "already canceled"),
        (("cancel", str(completed)), JOB_FAILURE, "already completed"),
        (("cancel", str(missing)), JOB_FAILURE, "no job"),
        (("retry", str(dead)), OK, "queued"),
        (("retry", str(to_requeue)), OK, "queued"),
        (("retry", str(still_queued)), JOB_FAILURE, "only dead or canceled"),
        (("retry", str(completed)), JOB_FAILURE, "only dead or canceled"),
        (("retry", str(missing)), JOB_FAILURE, "no job"),
        (("retry",), USAGE, "JOB_ID"),
        (("cancel", "abc"), USAGE, "not a valid integer"),
        (("cancel",), USAGE, "Missing argument"),
    ]
    results = pgjobs_cli_all(typed, *[args for args, _, _ in expected])
    for result, (_, code, text) in zip(results, expected, strict=True):
        assert result.returncode == code, result
        assert "Traceback" not in result.stderr, result
        if code == OK:
            assert result.stdout.strip() == text, result
        else:
            assert text in result.stderr, result
            assert result.stdout == "", result

    with psycopg.connect(typed, row_factory=dict_row) as conn:
        rows = conn.execute(
            "select id, state, attempt, cancel_requested_at is not null as cancel_requested "
            "from pgjobs.jobs"
        ).fetchall()
    after = {r["id"]: (r["state"], r["attempt"], r["cancel_requested"]) for r in rows}
    assert after == {
        queued: ("canceled", 0, False),
        still_queued: ("queued", 0, False),
        running: ("running", 1, True),
        completed: ("completed", 1, False),
        dead: ("queued", 0, False),  # attempts reset
        canceled: ("canceled", 0, False),
        to_requeue: ("queued", 0, False),
    }


@pytest.mark.slow
def test_unknown_command_is_a_usage_error(typed: str) -> None:
    assert "no such command" in refused(None, USAGE, "frobnicate").lower()


@pytest.mark.slow
def test_a_database_that_cannot_be_reached_is_a_one_line_usage_error(server_dsn: str) -> None:
    missing = db.with_dbname(server_dsn, f"pgjobs_test_absent_{secrets.token_hex(4)}")
    stderr = refused(missing, USAGE, "status", "1")
    assert stderr.startswith("error: cannot connect to PostgreSQL"), stderr
    assert "does not exist" in stderr
