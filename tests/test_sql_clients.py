"""Clients in any language: enqueue with scope in one transaction through plain
SQL, distinct SQLSTATEs for each refusal, and a priority that takes the integer a
driver sends. Driven from the psql binary and from libpq exactly as
node-postgres drives it (untyped text parameters)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.numeric import Int2, Int4, Int8

import pgjobs
from pgjobs.errors import AccessDenied, InvalidJob
from tests.support.clients import JOB_TYPE, Logins, as_user, count, jobs_with, logins, prepare

ENQUEUE_SCOPED = """
begin;
select set_config('pgjobs.organization', 'org-A', true);
select pgjobs.enqueue('{job_type}', '{{"marker": "{marker}"}}', priority => {priority});
commit;
"""


@pytest.fixture(scope="module")
def who(server_dsn: str, template_db: str) -> Iterator[Logins]:
    with logins(server_dsn, "sqlc") as made:
        yield made


@pytest.fixture
def app_dsn(dsn: str, who: Logins) -> str:
    prepare(dsn, who)
    return as_user(dsn, who.app)


def psql_binary() -> str:
    """The machine's psql, else the one the embedded server ships."""
    found = shutil.which("psql")
    if found is None:
        try:
            import pgserver

            candidate = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
            found = str(candidate) if candidate.exists() else None
        except ImportError:
            found = None
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("psql is not installed (CI installs postgresql-client)")
        pytest.skip("psql is not installed")
    return found


def psql(dsn: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [psql_binary(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose",
         "-d", dsn],
        input="\\set VERBOSITY verbose\n" + script,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def priority_of(dsn: str, marker: str) -> int:
    return count(dsn, "select priority from pgjobs.jobs where payload->>'marker' = %s", marker)


@pytest.mark.parametrize(
    ("given", "stored"), [("1", 1), ("0::smallint", 0), ("3::int", 3), ("'2'", 2)]
)
def test_psql_enqueues_with_scope_and_a_plain_integer_priority(
    dsn: str, app_dsn: str, given: str, stored: int
) -> None:
    marker = f"psql-{stored}"
    done = psql(app_dsn, ENQUEUE_SCOPED.format(job_type=JOB_TYPE, marker=marker, priority=given))
    assert done.returncode == 0, done.stderr
    assert jobs_with(dsn, marker) == 1
    assert priority_of(dsn, marker) == stored


# What each refusal looks like to a client that has only the SQLSTATE.
REFUSALS = {
    "no organization set": (
        "PJ004",
        "select pgjobs.enqueue('{t}');",
    ),
    "another organization": (
        "42501",
        "begin; select set_config('pgjobs.organization', 'org-A', true);"
        " select pgjobs.enqueue('{t}', organization => 'org-B');",
    ),
    "a privilege the role lacks": (
        "42501",
        "select * from pgjobs.claim('w', array['default'], 1, 30);",
    ),
    "priority out of range": (
        "PJ001",
        "begin; select set_config('pgjobs.organization', 'org-A', true);"
        " select pgjobs.enqueue('{t}', priority => 9);",
    ),
    "priority far out of smallint range": (
        "PJ001",
        "begin; select set_config('pgjobs.organization', 'org-A', true);"
        " select pgjobs.enqueue('{t}', priority => 70000);",
    ),
    "unknown job type": (
        "PJ001",
        "begin; select set_config('pgjobs.organization', 'org-A', true);"
        " select pgjobs.enqueue('no.such.type');",
    ),
    "no such job": ("PJ002", "select pgjobs.cancel(123456789);"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_psql_sees_a_distinct_sqlstate_for_each_refusal(dsn: str, app_dsn: str, case: str) -> None:
    code, script = REFUSALS[case]
    done = psql(app_dsn, script.format(t=JOB_TYPE) + "\n")
    assert done.returncode == 3, done.stderr  # psql's exit code for a failed script
    assert f"ERROR:  {code}:" in done.stderr, done.stderr
    assert count(dsn, "select count(*) from pgjobs.jobs") == 0


def test_psql_cancel_of_a_finished_job_is_pj003(dsn: str, app_dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        job = pgjobs.enqueue(conn, JOB_TYPE, organization="org-A").id
        conn.commit()
    script = "begin; select set_config('pgjobs.organization', 'org-A', true);"
    first = psql(app_dsn, f"{script} select pgjobs.cancel({job}); commit;\n")
    assert first.returncode == 0, first.stderr
    again = psql(app_dsn, f"{script} select pgjobs.cancel({job});\n")
    assert "ERROR:  PJ003:" in again.stderr, again.stderr


# libpq's extended protocol with every parameter untyped (OID 0) and sent as
# text: what node-postgres does for `client.query(text, [values])`.
NODE_STYLE = (
    b"select pgjobs.enqueue(job_type => $1, payload => $2, organization => $3, priority => $4)"
)


def test_untyped_text_parameters_as_node_postgres_sends_them(dsn: str, app_dsn: str) -> None:
    with psycopg.connect(app_dsn) as conn:
        conn.execute("select set_config('pgjobs.organization', 'org-A', true)")
        result = conn.pgconn.exec_params(
            NODE_STYLE, [JOB_TYPE.encode(), b'{"marker": "node-style"}', b"org-A", b"1"], [0] * 4
        )
        assert result.status == psycopg.pq.ExecStatus.TUPLES_OK, result.error_message
        bad = conn.pgconn.exec_params(
            NODE_STYLE, [JOB_TYPE.encode(), b"{}", b"org-A", b"5"], [0] * 4
        )
        assert bad.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"PJ001"
        conn.rollback()
        conn.execute("select set_config('pgjobs.organization', 'org-A', true)")
        conn.pgconn.exec_params(
            NODE_STYLE, [JOB_TYPE.encode(), b'{"marker": "node-style"}', b"org-A", b"1"], [0] * 4
        )
        conn.commit()
    assert (jobs_with(dsn, "node-style"), priority_of(dsn, "node-style")) == (1, 1)


@pytest.mark.parametrize("wrap", [Int2, Int4, int], ids=["int2", "int4", "python int"])
def test_typed_integer_parameters_reach_priority(dsn: str, app_dsn: str, wrap: Any) -> None:
    marker = f"typed-{wrap.__name__}"
    with psycopg.connect(app_dsn) as conn:
        conn.execute("select set_config('pgjobs.organization', 'org-A', true)")
        conn.execute(
            "select pgjobs.enqueue(%s, %s::jsonb, priority => %s)",
            (JOB_TYPE, f'{{"marker": "{marker}"}}', wrap(1)),
        )
        conn.commit()
    assert priority_of(dsn, marker) == 1


def test_a_bigint_priority_needs_a_cast(app_dsn: str) -> None:
    """int8 casts to int only on assignment, as int did to smallint: a driver
    that sends 64-bit integers writes `$1::int` (the README says so)."""
    with psycopg.connect(app_dsn) as conn:
        conn.execute("select set_config('pgjobs.organization', 'org-A', true)")
        with pytest.raises(psycopg.errors.UndefinedFunction):
            conn.execute("select pgjobs.enqueue(%s, priority => %s)", (JOB_TYPE, Int8(1)))
        conn.rollback()
        conn.execute("select set_config('pgjobs.organization', 'org-A', true)")
        conn.execute("select pgjobs.enqueue(%s, priority => %s::int)", (JOB_TYPE, Int8(1)))
        conn.rollback()


def test_python_translates_each_sqlstate(app_dsn: str) -> None:
    with psycopg.connect(app_dsn) as conn:
        with pytest.raises(AccessDenied, match="scoped to no organization"):
            pgjobs.enqueue(conn, JOB_TYPE)
        conn.rollback()
        with pgjobs.tenant(conn, "org-A"), pytest.raises(AccessDenied, match="outside"):
            pgjobs.enqueue(conn, JOB_TYPE, organization="org-B")
        conn.rollback()
        with pgjobs.tenant(conn, "org-A"), pytest.raises(InvalidJob, match="priority"):
            pgjobs.enqueue(conn, JOB_TYPE, priority=7)
        conn.rollback()


def test_the_sql_function_keeps_its_named_argument_contract(dsn: str, app_dsn: str) -> None:
    """Same names, order and result as before: job type alone, positional
    arguments, and every named argument."""
    with psycopg.connect(app_dsn) as conn:
        conn.execute("select set_config('pgjobs.organization', 'org-A', true)")
        ids = [
            conn.execute(q, p).fetchone()[0]  # type: ignore[index]
            for q, p in (
                ("select pgjobs.enqueue(%s)", (JOB_TYPE,)),
                ("select pgjobs.enqueue(%s, %s::jsonb, %s, null, 2)", (JOB_TYPE, "{}", "org-A")),
                (
                    "select pgjobs.enqueue(job_type => %s, payload => '{}',"
                    " organization => 'org-A', queue => 'default', priority => 0::smallint,"
                    " run_at => now(),"
                    " dedup_key => 'k', depends_on => null, max_attempts => 2,"
                    " timeout_seconds => 5)",
                    (JOB_TYPE,),
                ),
                ("select id from pgjobs.enqueue_job(%s, priority => 3)", (JOB_TYPE,)),
            )
        ]
        conn.commit()
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == 4
    assert count(dsn, "select count(*) from pgjobs.jobs where organization = 'org-A'") == 4
