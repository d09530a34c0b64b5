"""One error contract.

Whatever is passed to ``pgjobs.enqueue`` / ``enqueue_many`` raises InvalidJob
or AccessDenied, or enqueues; and a refusal writes nothing. ``pgjobs enqueue``
ends with exit 0, or with one line on stderr and exit 2 (input) or 1
(job-level, e.g. another organization), never a traceback. Both run as a
pgjobs_app login scoped to org-A, as an application would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from psycopg.pq import TransactionStatus

import pgjobs
from pgjobs import cli
from pgjobs.errors import AccessDenied, InvalidJob
from tests import strategies as hostile
from tests.test_security import Roles, as_user, roles  # noqa: F401 - fixture

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def contract_dsn(dsn: str, roles: Roles) -> str:  # noqa: F811
    """The app login's DSN to a database of this test's own (``dsn``: the superuser's)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "insert into pgjobs.job_types (name, handler) values (%s, 'tests.handlers:noop')",
            (hostile.JOB_TYPE,),
        )
        # A parent that exists, for the depends_on values that name it.
        pgjobs.enqueue(conn, hostile.JOB_TYPE, organization=hostile.ORG)
    return as_user(dsn, roles.app)


@pytest.fixture
def app(contract_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(contract_dsn) as conn:
        yield conn


def _count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select count(*) from pgjobs.jobs").fetchone()
    assert row is not None
    return int(row[0])


def _call_as_tenant(conn: psycopg.Connection[Any], call: Any) -> None:
    with conn.transaction(force_rollback=True):
        conn.execute("select set_config('pgjobs.organization', %s, true)", (hostile.ORG,))
        before = _count(conn)
        try:
            call()
        except (InvalidJob, AccessDenied):
            # Refused by Python (nothing sent), or by the database, whose
            # failed statement is undone whole.
            if conn.info.transaction_status != TransactionStatus.INERROR:
                assert _count(conn) == before


@SETTINGS
@given(job_type=hostile.JOB_TYPES, payload=hostile.PAYLOADS, options=hostile.OPTIONS)
def test_enqueue_raises_invalid_job_or_access_denied_only(
    app: psycopg.Connection[Any], job_type: Any, payload: Any, options: dict[str, Any]
) -> None:
    _call_as_tenant(app, lambda: pgjobs.enqueue(app, job_type, payload, **options))


@SETTINGS
@given(job_type=hostile.JOB_TYPES, payload=hostile.PAYLOADS, options=hostile.OPTIONS)
def test_enqueue_many_raises_invalid_job_or_access_denied_only(
    app: psycopg.Connection[Any], job_type: Any, payload: Any, options: dict[str, Any]
) -> None:
    jobs = [{"job_type": hostile.JOB_TYPE}, {"job_type": job_type, "payload": payload, **options}]
    _call_as_tenant(app, lambda: pgjobs.enqueue_many(app, jobs))


def test_enqueue_many_refuses_what_is_not_a_job(app: psycopg.Connection[Any]) -> None:
    for jobs in ([1], ["a.type"], [{"job_type": "a.type", "colour": "red"}], [{}]):
        with pytest.raises(InvalidJob):
            pgjobs.enqueue_many(app, jobs)  # type: ignore[arg-type]


@SETTINGS
@given(
    job_type=hostile._CLI_TEXT | hostile.st.just(hostile.JOB_TYPE),
    payload=hostile.CLI_PAYLOADS,
    options=hostile.CLI_OPTIONS,
)
def test_cli_enqueue_ends_in_one_line_and_an_exit_code(
    dsn: str, contract_dsn: str, job_type: str, payload: str, options: dict[str, str]
) -> None:
    args = ["enqueue", job_type, "--payload", payload, "--dsn", contract_dsn]
    for name, value in options.items():
        args += [name, value]
    if "--org" not in options:
        args += ["--org", hostile.ORG]
    # Counted as the superuser: --org may name any organization.
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = _count(conn)
        result = CliRunner().invoke(cli.main, args)
        after = _count(conn)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{args}: {result.exc_info}"
    )
    if result.exit_code == 0:
        assert after == before + (0 if '"duplicate": true' in result.stdout else 1)
        return
    assert result.exit_code in (1, 2), (args, result.exit_code, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
    assert "Traceback" not in result.output
    assert after == before


def test_cli_input_errors_exit_2_and_job_level_errors_exit_1(contract_dsn: str) -> None:
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli.main, [*args, "--dsn", contract_dsn])

    for args in (
        ["enqueue", "a.type", "--org", "org-A", "--timeout", "3000000"],
        ["enqueue", "a.type", "--org", "org-A", "--payload", '{"n": 1' + "0" * 5000 + "}"],
        ["enqueue", "a.type", "--org", "org-A", "--priority", "x"],
        ["enqueue", "a.type", "--org", "esc\x1b[2J"],
    ):
        result = run(*args)
        assert result.exit_code == 2, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1 and "\x1b" not in result.stderr
    result = run("enqueue", "a.type", "--org", "org-A", "--depends-on", "999999")
    assert result.exit_code == 2, result.stderr  # no such parent: input
    result = run("cancel", "999999", "--org", "org-A")
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1
