"""What a newcomer meets in the first ten minutes: each failure found by
following the README became one of these tests.

The CLI runs as a subprocess, from a project directory of the test's own and
with the repository off the import path, as it would for a user.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import psycopg
import pytest

import pgjobs
from pgjobs import db, diagnose
from pgjobs.errors import InvalidJob

VENV_BIN = Path(sys.executable).parent

JOBS_MODULE = textwrap.dedent(
    """
    import pgjobs

    @pgjobs.job("firstrun.hello", queue="firstrun")
    def hello(ctx: pgjobs.JobContext, name: str) -> dict:
        return {"greeting": f"hello {name}"}
    """
)


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project directory holding ``myapp/jobs.py``, nothing installed."""
    root = tmp_path / "project"
    (root / "myapp").mkdir(parents=True)
    (root / "myapp" / "jobs.py").write_text(JOBS_MODULE)
    return root


@pytest.fixture
def empty_dsn(server_dsn: str) -> Iterator[str]:
    """A database that `pgjobs migrate` never saw."""
    name = f"pgjobs_test_first_{os.getpid()}_{secrets.token_hex(3)}"
    db.create_database(server_dsn, name)
    try:
        yield db.with_dbname(server_dsn, name)
    finally:
        db.drop_database(server_dsn, name)


def cli(cwd: Path, *args: str, dsn: str | None = None, timeout: float = 60) -> Result:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", db.DSN_ENV)}
    if dsn is not None:
        env[db.DSN_ENV] = dsn
    env[db.HOME_ENV] = str(cwd / ".no-embedded-server")
    done = subprocess.run(
        [str(VENV_BIN / "pgjobs"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def refused(result: Result, *needles: str) -> str:
    """A usage error: exit 2, one clear line, no traceback."""
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    return result.stderr


def job_types(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("select name, handler from pgjobs.job_types").fetchall())


# -- registering job types -------------------------------------------------------


def test_enqueue_of_a_type_nobody_registered_says_how_to_register_it(
    conn: psycopg.Connection,
) -> None:
    before = conn.execute("select count(*) from pgjobs.jobs").fetchone()
    with pytest.raises(InvalidJob) as raised, conn.transaction():  # a savepoint
        pgjobs.enqueue(conn, "firstrun.never_registered", {}, organization="acme")
    message = str(raised.value)
    assert "unknown job type 'firstrun.never_registered'" in message
    assert "pgjobs register --import" in message and "--import" in message
    assert conn.execute("select count(*) from pgjobs.jobs").fetchone() == before


@pytest.mark.slow
def test_register_writes_the_types_of_a_module_in_the_current_directory(
    project: Path, dsn: str
) -> None:
    assert "firstrun.hello" not in job_types(dsn)
    enqueued = cli(project, "enqueue", "firstrun.hello", "--payload", '{"name": "x"}', dsn=dsn)
    refused(enqueued, "unknown job type 'firstrun.hello'", "pgjobs register --import")

    done = cli(project, "register", "--import", "myapp.jobs", dsn=dsn)
    assert done.returncode == 0, done
    assert "registered firstrun.hello" in done.stdout
    assert job_types(dsn)["firstrun.hello"] == "myapp.jobs:hello"
    enqueued = cli(project, "enqueue", "firstrun.hello", "--payload", '{"name": "x"}', dsn=dsn)
    assert enqueued.returncode == 0, enqueued


@pytest.mark.slow
def test_worker_imports_handlers_from_the_current_directory_and_runs_them(
    project: Path, dsn: str
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "insert into pgjobs.job_types (name, handler, queue) "
            "values ('firstrun.hello', 'myapp.jobs:hello', 'firstrun')"
        )
        job_id = pgjobs.enqueue(conn, "firstrun.hello", {"name": "ada"}).id
    done = cli(
        project,
        "worker",
        "--import",
        "myapp.jobs",
        "--queues",
        "firstrun",
        "--processes",
        "1",
        "--exit-when-idle",
        dsn=dsn,
    )
    assert done.returncode == 0, done
    with psycopg.connect(dsn) as conn:
        job = pgjobs.get(conn, job_id)
    assert job.state is pgjobs.State.COMPLETED
    assert job.result == {"greeting": "hello ada"}


@pytest.mark.slow
def test_imports_that_cannot_work_are_one_line_errors(project: Path, dsn: str) -> None:
    (project / "myapp" / "empty.py").write_text("X = 1\n")
    (project / "myapp" / "broken.py").write_text("import no_such_dependency_xyz\n")
    cases = {
        ("worker", "--import", "myap.jobs", "--exit-when-idle"): (
            "cannot import 'myap.jobs'",
            str(project),
        ),
        ("register", "--import", "myapp/jobs.py"): ("try --import myapp.jobs",),
        ("register", "--import", "myapp.broken"): ("'no_such_dependency_xyz'", "not installed"),
        ("register", "--import", "myapp.empty"): ("registered no job types", "@pgjobs.job"),
        ("register",): ("--import myapp.jobs",),
    }
    for args, needles in cases.items():
        refused(cli(project, *args, dsn=dsn), *needles)
    assert "firstrun.hello" not in job_types(dsn)


@pytest.mark.slow
def test_a_worker_names_the_job_types_it_has_no_handler_for(project: Path, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "insert into pgjobs.job_types (name, handler, queue) "
            "values ('firstrun.elsewhere', 'other.app:fn', 'firstrun')"
        )
    done = cli(project, "worker", "--queues", "firstrun", "--exit-when-idle", dsn=dsn)
    assert done.returncode == 0, done
    assert "worker_without_handlers" in done.stderr
    assert "job_types_without_handler" in done.stderr
    assert "firstrun.elsewhere" in done.stderr


# -- the database not ready ------------------------------------------------------


@pytest.mark.slow
def test_an_unmigrated_database_says_run_pgjobs_migrate(project: Path, empty_dsn: str) -> None:
    commands = [
        ("status", "1"),
        ("list",),
        ("enqueue", "t.any"),
        ("cancel", "1"),
        ("metrics",),
        ("dead-letter",),
        ("listen", "--timeout", "30"),  # exited 0 at once, having printed nothing
        ("worker", "--exit-when-idle"),
        ("register", "--import", "myapp.jobs"),
    ]
    started = time.monotonic()
    for args in commands:
        refused(cli(project, *args, dsn=empty_dsn), "no pgjobs schema", "pgjobs migrate")
    assert time.monotonic() - started < 60  # listen did not wait for its timeout


@pytest.mark.slow
def test_a_malformed_dsn_is_a_one_line_error(project: Path) -> None:
    for args in (("list",), ("worker", "--exit-when-idle"), ("migrate",)):
        refused(
            cli(project, *args, dsn="host=127.0.0.1 dbname"),
            "not a valid PostgreSQL connection string",
        )


@pytest.mark.slow
def test_a_worker_waits_for_an_unreachable_database_then_gives_up(project: Path) -> None:
    unreachable = "host=127.0.0.1 port=1 user=postgres dbname=postgres connect_timeout=2"
    started = time.monotonic()
    done = cli(project, "worker", "--exit-when-idle", "--wait-for-database", "1", dsn=unreachable)
    elapsed = time.monotonic() - started
    refused(done, "gave up waiting for the database after 1s", "127.0.0.1:1")
    assert "waiting_for_database" in done.stderr  # said what it was waiting for, meanwhile
    assert elapsed < 30
    refused(cli(project, "list", dsn=unreachable), "cannot connect to PostgreSQL")


def test_wait_for_database_is_bounded_without_sleeping() -> None:
    slept: list[float] = []
    with pytest.raises(diagnose.SetupError, match="gave up waiting"):
        diagnose.wait_for_database(
            "host=127.0.0.1 port=1 connect_timeout=2", timeout=0, sleep=slept.append
        )
    assert slept == []


def test_exit_when_idle_bounds_the_wait_by_default() -> None:
    from pgjobs import commands

    assert 0 < commands.WAIT_WHEN_EXITING_IDLE <= 60
