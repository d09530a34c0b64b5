"""Which server pgjobs talks to, and the embedded one's life across processes."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from pgjobs import db, embedded
from tests.support.databases import databases

# Runs in a fresh interpreter: connects to whatever resolve_dsn() picks and
# reports which postmaster answered.
_PROBE = textwrap.dedent(
    """
    import psycopg
    from pgjobs.db import resolve_dsn
    with psycopg.connect(resolve_dsn()) as conn:
        print(conn.execute("select pg_postmaster_start_time()::text").fetchone()[0])
    """
)


def _probe(home: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != db.DSN_ENV}
    env[db.HOME_ENV] = str(home)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _postmaster_pid(home: Path) -> int:
    return int((home / "pgdata" / "postmaster.pid").read_text().split()[0])


@pytest.fixture
def embedded_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A PGJOBS_HOME of the test's own; its server is stopped afterwards, so the
    test leaves no process behind even when it fails."""
    # Not under tmp_path when root: pytest makes its base directory 0700, and
    # the server's own OS user must be able to reach its data (pgjobs opens no
    # directory it did not make).
    base = Path(tempfile.mkdtemp(prefix="pgjobs-test-home-")) if os.geteuid() == 0 else tmp_path
    base.chmod(0o711)
    home = base / "home"
    monkeypatch.delenv(db.DSN_ENV, raising=False)
    monkeypatch.setenv(db.HOME_ENV, str(home))
    yield home
    db.stop_embedded(home / "pgdata")
    if base != tmp_path:
        shutil.rmtree(base, ignore_errors=True)
    # As root the server ran as an OS user made for this data directory.
    user = embedded.server_user((home / "pgdata").resolve())
    if user is not None:
        subprocess.run(["userdel", user], capture_output=True)


def test_explicit_dsn_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(db.DSN_ENV, "dbname=from_env")
    assert db.resolve_dsn("dbname=explicit") == "dbname=explicit"


def test_environment_wins_over_the_embedded_server(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_embedded() -> str:
        raise AssertionError("the embedded server must not start when PGJOBS_DSN is set")

    monkeypatch.setenv(db.DSN_ENV, "dbname=from_env")
    monkeypatch.setattr(db, "embedded_dsn", no_embedded)
    assert db.resolve_dsn() == "dbname=from_env"
    assert db.resolve_dsn(None) == "dbname=from_env"


def test_empty_dsn_and_empty_environment_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(db.DSN_ENV, "")
    monkeypatch.setattr(db, "embedded_dsn", lambda: "dbname=embedded")
    assert db.resolve_dsn("") == "dbname=embedded"


def test_default_home_is_one_per_user_whatever_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It was ./.pgjobs: every directory a command ran from got a server of its own.
    monkeypatch.delenv(db.HOME_ENV, raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setattr(db.os, "geteuid", lambda: 1000)
    homes = set()
    for cwd in (tmp_path / "a", tmp_path / "b"):
        cwd.mkdir()
        monkeypatch.chdir(cwd)
        homes.add(db.default_home())
    assert homes == {(tmp_path / "user" / ".local" / "share" / "pgjobs").resolve()}

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert db.default_home() == (tmp_path / "xdg" / "pgjobs").resolve()
    # Root's server runs as another account that must be able to reach its data.
    monkeypatch.setattr(db.os, "geteuid", lambda: 0)
    assert db.default_home() == Path("/var/lib/pgjobs")
    monkeypatch.setenv(db.HOME_ENV, str(tmp_path / "elsewhere"))
    assert db.default_home() == tmp_path / "elsewhere"


@pytest.mark.slow
def test_embedded_server_outlives_the_process_that_started_it_and_is_reused(
    embedded_home: Path,
) -> None:
    started = _probe(embedded_home)  # initdb and start, in a process that then exits
    pid = _postmaster_pid(embedded_home)
    assert psutil.pid_exists(pid)

    dsn = db.resolve_dsn()
    with psycopg.connect(dsn) as conn:
        version, start_time = conn.execute(
            "select version(), pg_postmaster_start_time()::text"
        ).fetchone()  # type: ignore[misc]
    assert version.startswith("PostgreSQL")
    assert start_time == started
    assert _probe(embedded_home) == started
    assert _postmaster_pid(embedded_home) == pid

    assert db.stop_embedded(embedded_home / "pgdata") is True
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert db.stop_embedded(embedded_home / "pgdata") is False


@pytest.mark.slow
def test_concurrent_first_starts_share_one_server(embedded_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != db.DSN_ENV}
    env[db.HOME_ENV] = str(embedded_home)
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", _PROBE], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in starters]
    assert [p.returncode for p in starters] == [0, 0, 0], [err for _, err in outputs]
    assert len({out for out, _ in outputs}) == 1


@pytest.mark.slow
def test_lock_files_naming_a_stranger_do_not_block_a_restart(embedded_home: Path) -> None:
    # After a reboot the old postmaster's pid can belong to anything; Postgres
    # and pgserver both take a live pid in a lock file for a running server.
    pgdata = embedded_home / "pgdata"
    first = _probe(embedded_home)
    socket_dir = Path((pgdata / "postmaster.pid").read_text().split("\n")[4])
    socket_lock = socket_dir / ".s.PGSQL.5432.lock"
    pid_lines = (pgdata / "postmaster.pid").read_text()
    lock_lines = socket_lock.read_text()
    assert db.stop_embedded(pgdata)

    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        old = pid_lines.split("\n", 1)[0]
        (pgdata / "postmaster.pid").write_text(pid_lines.replace(old, str(stranger.pid), 1))
        socket_lock.write_text(lock_lines.replace(old, str(stranger.pid), 1))

        assert _probe(embedded_home) != first
        assert stranger.poll() is None  # left alone
    finally:
        stranger.kill()
        stranger.wait()


def test_test_server_dsn_prefers_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(db.TEST_DSN_ENV, "dbname=from_env")
    monkeypatch.setattr(db, "LOCAL_TEST_DSN", "host=127.0.0.1 port=1 connect_timeout=2")
    assert db.test_server_dsn() == "dbname=from_env"


@pytest.mark.slow
def test_test_server_dsn_falls_back_to_the_embedded_server(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(db.TEST_DSN_ENV, raising=False)
    monkeypatch.setattr(db, "LOCAL_TEST_DSN", "host=127.0.0.1 port=1 user=postgres")  # refused
    dsn = db.test_server_dsn()
    # The socket lives in a private directory beside the data (pgjobs.embedded).
    assert conninfo_to_dict(dsn)["host"] == str(embedded_home.resolve() / "run")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select current_user").fetchone() == ("postgres",)


@pytest.mark.parametrize(
    "dsn",
    [
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        "postgresql://postgres@127.0.0.1:5432/postgres?connect_timeout=3",
        "host='/tmp/some dir' port=5432 user=postgres",
    ],
)
def test_with_dbname_changes_only_the_database(dsn: str) -> None:
    before = conninfo_to_dict(dsn)
    after = conninfo_to_dict(db.with_dbname(dsn, "other db"))
    assert after.pop("dbname") == "other db"
    before.pop("dbname", None)
    assert after == before


@pytest.fixture
def scratch_names(server_dsn: str) -> Iterator[Callable[[str], str]]:
    """Unique database names for this test, dropped afterwards whatever happens."""
    names: list[str] = []

    def make(label: str) -> str:
        names.append(databases.new_name(server_dsn, f"{secrets.token_hex(3)}_{label}"))
        return names[-1]

    yield make
    for name in names:
        databases.drop(name)


def _exists(server_dsn: str, name: str) -> bool:
    with psycopg.connect(server_dsn) as conn:
        row = conn.execute("select 1 from pg_database where datname = %s", [name]).fetchone()
    return row is not None


def test_create_database_quotes_the_name_and_copies_the_template(
    server_dsn: str, scratch_names: Callable[[str], str]
) -> None:
    template = scratch_names('tpl "quoted"; drop')
    clone = scratch_names("clone")
    db.create_database(server_dsn, template)
    with psycopg.connect(db.with_dbname(server_dsn, template)) as conn:
        conn.execute("create table marker (x int)")
        conn.execute("insert into marker values (42)")

    db.create_database(server_dsn, clone, template=template)

    assert _exists(server_dsn, template)
    with psycopg.connect(db.with_dbname(server_dsn, clone)) as conn:
        assert conn.execute("select x from marker").fetchall() == [(42,)]


def test_drop_database_disconnects_sessions_and_ignores_a_missing_database(
    server_dsn: str, scratch_names: Callable[[str], str]
) -> None:
    name = scratch_names("busy")
    db.create_database(server_dsn, name)
    lingering = psycopg.connect(db.with_dbname(server_dsn, name))
    try:
        db.drop_database(server_dsn, name)
        assert not _exists(server_dsn, name)
        db.drop_database(server_dsn, name)  # already gone: no error
    finally:
        lingering.close()
