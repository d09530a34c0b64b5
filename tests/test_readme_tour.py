"""The README's tour, run as written (see tests/support/tour.py for how each block runs).

It failed twice before: the first Python enqueue raised ``unknown job type
'send_report'`` (nothing had registered the type) and ``pgjobs worker --import
myapp.jobs`` raised ModuleNotFoundError from the project directory.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgjobs import db
from tests.support import tour

VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def empty_dsn(server_dsn: str) -> Iterator[str]:
    """A database with no pgjobs schema: the tour starts with ``pgjobs migrate``."""
    name = f"pgjobs_test_tour_{os.getpid()}_{secrets.token_hex(3)}"
    db.create_database(server_dsn, name)
    try:
        yield db.with_dbname(server_dsn, name)
    finally:
        db.drop_database(server_dsn, name)


def tour_env(dsn: str, home: Path) -> dict[str, str]:
    """A newcomer's shell: pgjobs and psql on PATH, nothing else of the repo's."""
    db._import_pgserver()  # quiets platformdirs' warning about XDG_RUNTIME_DIR
    from pgserver._commands import POSTGRES_BIN_PATH

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", db.DSN_ENV)}
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", ""), str(POSTGRES_BIN_PATH)])
    env[db.DSN_ENV] = dsn
    env[db.HOME_ENV] = str(home)  # were anything to start an embedded server, it is the test's
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tour:
    def __init__(self, project: Path, env: dict[str, str], port: int) -> None:
        self.project, self.env, self.port = project, env, port
        self.worker: subprocess.Popen[str] | None = None
        self.worker_log = project / "worker.log"

    def text(self, step: tour.Step) -> str:
        return step.text.replace(tour.EXAMPLE_DSN, self.env[db.DSN_ENV]).replace(
            tour.EXAMPLE_METRICS_PORT, str(self.port)
        )

    def run(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            cwd=self.project,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def ok(self, args: list[str], stdin: str | None = None) -> str:
        done = self.run(args, stdin)
        assert done.returncode == 0, (args, stdin, done.stdout, done.stderr)
        return done.stdout

    def step(self, step: tour.Step) -> None:
        text = self.text(step)
        if step.kind == "sh":
            self.ok(["bash", "-euo", "pipefail", "-c", text])
        elif step.kind == "worker":
            self.worker = subprocess.Popen(
                ["bash", "-c", "exec " + text.strip()],
                cwd=self.project,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=self.worker_log.open("w"),
                text=True,
            )
        elif step.kind == "file":
            assert step.path is not None
            path = self.project / step.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        elif step.kind == "python":
            self.ok([sys.executable, "-c", text])
        elif step.kind == "sql":
            self.ok(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.env[db.DSN_ENV]], text)
        elif step.kind == "shell-transcript":
            self.shell_transcript(step)
        else:
            self.psql_transcript(step)

    def shell_transcript(self, step: tour.Step) -> None:
        last_code = 0
        for i, command in enumerate(step.commands):
            if command.text == "echo $?":
                assert [str(last_code)] == command.output, (step.commands[i - 1].text, last_code)
                continue
            line = self.text(tour.Step("sh", command.text))
            done = self.run(["bash", "-o", "pipefail", "-c", line])
            last_code = done.returncode
            shown_next = i + 1 < len(step.commands) and step.commands[i + 1].text == "echo $?"
            assert shown_next or done.returncode == 0, (line, done.stdout, done.stderr)
            # The last line is the outcome (the final progress line, the health
            # line); lines before it may legitimately differ (a progress step
            # the watch's poll did not see).
            # A refused command says why on stderr (its stdout is empty).
            actual = (done.stdout or done.stderr).rstrip("\n").splitlines()
            assert actual, (line, done.stderr)
            assert tour.normalized(actual[-1]) == tour.normalized(command.output[-1]), (
                line,
                done.stdout,
            )

    def psql_transcript(self, step: tour.Step) -> None:
        for command in step.commands:
            out = self.ok(
                ["psql", "-X", "-P", "pager=off", "-d", self.env[db.DSN_ENV], "-c", command.text]
            )
            actual = out.rstrip("\n").splitlines()
            # Column names and the row count, not values (pids, host names, timings).
            assert tour.normalized(actual[0]) == tour.normalized(command.output[0]), out
            assert actual[-1] == command.output[-1], (command.text, out)

    def stop_worker(self) -> int | None:
        if self.worker is None:
            return None
        self.worker.send_signal(signal.SIGTERM)
        try:
            return self.worker.wait(timeout=60)
        finally:
            if self.worker.poll() is None:
                self.worker.kill()
                self.worker.wait()


def test_the_tour_has_every_kind_of_step_it_promises() -> None:
    kinds = [s.kind for s in tour.steps()]
    assert kinds.count("worker") == 1
    assert {"sh", "file", "python", "sql", "shell-transcript", "psql-transcript"} <= set(kinds)
    assert [s.path for s in tour.steps() if s.kind == "file"] == ["myapp/jobs.py"]
    assert tour.EXAMPLE_DSN in tour.steps()[0].text


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_readme_tour_runs_as_written(empty_dsn: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    run = Tour(project, tour_env(empty_dsn, tmp_path / "home"), free_port())
    try:
        for step in tour.steps():
            run.step(step)
    finally:
        code = run.stop_worker()
    log = run.worker_log.read_text()
    assert code == 0, log
    assert "Traceback" not in log, log
    # What the tour says happened, in the tables.
    with psycopg.connect(empty_dsn) as conn:
        states = dict(conn.execute("select id, state from pgjobs.jobs").fetchall())
        reports = conn.execute("select org, month from reports order by month").fetchall()
    assert states[1] == "canceled"  # enqueued from Python, then canceled
    assert states[2] == states[3] == states[5] == "completed"
    assert states[6] == "canceled"  # the delayed one, canceled by the CLI
    assert states[4] in ("queued", "running", "retrying", "dead")  # retried by the CLI
    assert {("acme", "2026-10"), ("acme", "2026-11"), ("acme", "2026-12")} <= set(reports)
    assert states[7] in ("queued", "running", "completed")  # triggered from its schedule
    assert not (tmp_path / "home").exists()  # no embedded server was started on the side
