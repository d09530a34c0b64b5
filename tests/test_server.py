"""``pgjobs server status|stop|url``: the embedded server is one, known and
controllable. Before, commands started one more server under ./.pgjobs of every
directory they ran in, and nothing showed, stopped or connected to them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pgjobs import db, embedded, server

VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def home() -> Iterator[Path]:
    """A PGJOBS_HOME of the test's own; its server is stopped whatever happens.

    Not under pytest's tmp_path: run as root, the server runs as another account
    that must traverse every parent directory, and each pytest run (another
    checkout's, say) makes /tmp/pytest-of-root private again.
    """
    base = Path(tempfile.mkdtemp(prefix="pgjobs-server-test-"))
    base.chmod(0o711)  # mkdtemp makes it private; pgjobs opens no directory itself
    path = base / "home"
    try:
        yield path
    finally:
        db.stop_embedded(path / "pgdata")
        shutil.rmtree(path.parent, ignore_errors=True)
        user = embedded.server_user((path / "pgdata").resolve())
        if user is not None:  # as root, the OS user made for this data directory
            subprocess.run(["userdel", user], capture_output=True)


def pgjobs(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != db.DSN_ENV}
    env[db.HOME_ENV] = str(home)
    return subprocess.run(
        [str(VENV_BIN / "pgjobs"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def psql(url: str, query: str) -> str:
    db._import_pgserver()
    from pgserver._commands import POSTGRES_BIN_PATH

    done = subprocess.run(
        [str(POSTGRES_BIN_PATH / "psql"), "-X", "-At", url, "-c", query],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.slow
def test_one_embedded_server_shown_reached_and_stopped_by_the_server_commands(
    home: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()

    before = pgjobs(home, first, "server", "status")
    assert before.returncode == 1, before
    assert "not running" in before.stdout
    assert str(home / "pgdata") in before.stdout

    migrated = pgjobs(home, first, "migrate")  # starts it
    assert migrated.returncode == 0, migrated.stderr
    status = pgjobs(home, second, "server", "status")  # from another directory: the same one
    assert status.returncode == 0, status
    assert "state: running" in status.stdout
    pid = int(status.stdout.split("pid: ")[1].split()[0])
    assert psutil.pid_exists(pid)
    assert not (first / ".pgjobs").exists() and not (second / ".pgjobs").exists()

    url = pgjobs(home, second, "server", "url")
    assert url.returncode == 0, url.stderr
    assert url.stdout.startswith("postgresql://")
    assert f"url: {url.stdout.strip()}" in status.stdout
    assert psql(url.stdout.strip(), "select count(*) from pgjobs.jobs") == "0"
    other = pgjobs(home, second, "server", "url", "--database", "template1").stdout.strip()
    assert psql(other, "select current_database()") == "template1"

    # The demo names the database it used, and where, and how to look inside.
    demo = pgjobs(home, first, "demo", "--jobs", "20", "--processes", "1")
    assert demo.returncode == 0, demo.stderr
    assert f"database pgjobs_demo: on the embedded server ({home / 'pgdata'})" in demo.stdout
    assert 'psql "$(pgjobs server url --database pgjobs_demo)"' in demo.stdout
    demo_url = pgjobs(home, second, "server", "url", "--database", "pgjobs_demo").stdout.strip()
    assert psql(demo_url, "select count(*) from pgjobs.jobs") == "20"

    stopped = pgjobs(home, first, "server", "stop")
    assert stopped.returncode == 0, stopped
    assert "stopped" in stopped.stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    after = pgjobs(home, first, "server", "status")
    assert after.returncode == 1 and "not running" in after.stdout
    again = pgjobs(home, first, "server", "stop")
    assert again.returncode == 0 and "not running" in again.stdout


def test_a_dsn_becomes_a_url_psql_takes() -> None:
    assert (
        server.to_url("host=127.0.0.1 port=5433 user=app password=s3/cr:t dbname=jobs")
        == "postgresql://app:s3%2Fcr%3At@127.0.0.1:5433/jobs"
    )
    assert (
        server.to_url("host='/tmp/pg sock' port=5432 user=postgres dbname=postgres")
        == "postgresql://postgres@/postgres?host=%2Ftmp%2Fpg%20sock&port=5432"
    )


def test_url_names_the_configured_server_not_the_embedded_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_embedded() -> str:
        raise AssertionError("server url must not start the embedded server when a DSN is set")

    monkeypatch.setattr(db, "embedded_dsn", no_embedded)
    monkeypatch.setenv(db.DSN_ENV, "host=db.internal user=app dbname=app")
    assert server.url() == "postgresql://app@db.internal/app"
    assert server.url(database="pgjobs_demo") == "postgresql://app@db.internal/pgjobs_demo"
