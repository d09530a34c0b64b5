"""The embedded server is private.

Started as root (this machine's and CI's case), it runs as an OS user of its
own per data directory, listens on a socket in a directory only that user may
enter, and admits by peer authentication only the OS user who runs pgjobs.
A second local OS user, made here with useradd and run with runuser, cannot
connect; neither can a second project's server; and no directory above the
data directory changes its permissions. Where its user cannot reach the data,
pgjobs refuses with the fix in the message.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgjobs import db, embedded

ROOT_ONLY = "the OS-user checks need root (useradd, runuser), as on this machine and in CI"


def _bin() -> Path:
    return Path(db._import_pgserver()._commands.POSTGRES_BIN_PATH)


def _modes(path: Path) -> dict[Path, int]:
    return {p: stat.S_IMODE(p.stat().st_mode) for p in [path, *path.parents] if p.exists()}


@contextlib.contextmanager
def _home() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="pgjobs-private-"))
    base.chmod(0o711)  # our own directory: others may pass through, not list it
    home = base / "project"
    try:
        yield home
    finally:
        db.stop_embedded(home / "pgdata")
        user = embedded.server_user((home / "pgdata").resolve())
        shutil.rmtree(base, ignore_errors=True)
        if user is not None:
            subprocess.run(["userdel", user], capture_output=True)


@contextlib.contextmanager
def _os_user() -> Iterator[str]:
    name = f"pgjobs-t-{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def _as(user: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", user, "--", *command], capture_output=True, text=True, timeout=60
    )


def _psql(user: str, dsn: str) -> subprocess.CompletedProcess[str]:
    return _as(user, str(_bin() / "psql"), "-X", "-At", "-c", "select 1", dsn)


@pytest.mark.slow
def test_embedded_server_admits_only_the_os_user_running_pgjobs() -> None:
    if os.geteuid() != 0:
        pytest.fail(ROOT_ONLY)
    with _home() as home_a, _home() as home_b, _os_user() as intruder:
        before = {**_modes(home_a.parent), **_modes(_bin())}
        dsn_a = db.embedded_dsn(home_a / "pgdata")
        dsn_b = db.embedded_dsn(home_b / "pgdata")
        assert {**_modes(home_a.parent), **_modes(_bin())} == before

        with psycopg.connect(dsn_a) as conn:  # the OS user running pgjobs
            assert conn.execute("select 1").fetchone() == (1,)
        socket_dir = Path(psycopg.conninfo.conninfo_to_dict(dsn_a)["host"])
        assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o700
        assert "trust" not in (home_a / "pgdata" / "pg_hba.conf").read_text()

        # Another local user: the socket's directory is closed to it, and
        # peer authentication would refuse it anyway.
        refused = _psql(intruder, dsn_a)
        assert refused.returncode != 0 and "Permission denied" in refused.stderr
        assert _as(intruder, "ls", str(home_a / "pgdata")).returncode != 0

        # The other project's server, as its own OS user: no way in either.
        user_b = embedded.server_user((home_b / "pgdata").resolve())
        user_a = embedded.server_user((home_a / "pgdata").resolve())
        assert user_b is not None and user_a is not None and user_a != user_b
        assert _psql(user_b, dsn_a).returncode != 0
        assert _as(user_b, "cat", str(home_a / "pgdata" / "PG_VERSION")).returncode != 0
        # Even the server's own OS user is not the one peer auth admits.
        own = _psql(user_a, dsn_a)
        assert own.returncode != 0 and "Peer authentication failed" in own.stderr
        with psycopg.connect(dsn_b) as conn:
            assert conn.execute("select 1").fetchone() == (1,)


@pytest.mark.slow
def test_embedded_server_refuses_with_the_fix_when_its_user_cannot_reach_the_data() -> None:
    if os.geteuid() != 0:
        pytest.fail(ROOT_ONLY)
    closed = Path(tempfile.mkdtemp(prefix="pgjobs-closed-"))  # 0700, as /root is
    try:
        before = _modes(closed)
        with pytest.raises(embedded.EmbeddedServerError, match="PGJOBS_HOME") as refused:
            db.embedded_dsn(closed / "project" / "pgdata")
        assert "changes no permission" in str(refused.value)
        assert _modes(closed) == before
        assert not (closed / "project" / "pgdata" / "PG_VERSION").exists()
    finally:
        user = embedded.server_user((closed / "project" / "pgdata").resolve())
        shutil.rmtree(closed, ignore_errors=True)
        if user is not None:
            subprocess.run(["userdel", user], capture_output=True)
