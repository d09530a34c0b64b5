"""The embedded server, started privately.

pgserver's own start is not private: as root it runs every project's server as
one shared OS user with ``trust`` auth, opens every ancestor of the data
directory and of its binaries to other users, and may put the socket in a
world-writable directory; so any local user could connect as superuser, and one
project's server could reach another's. pgjobs uses pgserver's binaries only,
and starts them itself:

- the socket lives in a directory only the server's OS user may enter (0700);
- authentication is ``peer``: only the OS user who runs pgjobs is mapped to the
  ``postgres`` role, every other local user is refused (no TCP listener);
- as root, each data directory gets an OS user of its own
  (``pgjobs-<hash of the path>``), so two projects' servers cannot read each
  other's files or sockets;
- no permission outside pgjobs' own home directory is changed. If the server's
  user cannot reach the data directory or the binaries, pgjobs refuses and says
  how to fix it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType

from pgjobs.errors import PgJobsError

_SUPERUSER = "postgres"
# sun_path holds 108 bytes; the socket's name adds ".s.PGSQL.5432".
_MAX_SOCKET_DIR = 90


class EmbeddedServerError(PgJobsError):
    """The embedded server cannot be started privately; the message says why and what to do."""


def server_user(pgdata: Path) -> str | None:
    """The OS user the server runs as: the caller's own, or as root one per data directory."""
    if os.geteuid() != 0:
        return None
    return "pgjobs-" + hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]


def start(pgserver: ModuleType, pgdata: Path) -> None:
    """Initializes ``pgdata`` if needed and starts a private server on it."""
    user = server_user(pgdata)
    bin_path = Path(pgserver._commands.POSTGRES_BIN_PATH)
    if user is not None:
        _ensure_os_user(user)
        for path in (pgdata.parent, bin_path, bin_path.parent / "lib"):
            _check_reachable(path, user)
        if not (bin_path / "postgres").stat().st_mode & stat.S_IXOTH:
            raise EmbeddedServerError(
                f"pgjobs: {bin_path / 'postgres'} is not executable by other users, so the "
                f"embedded server cannot run as {user}; run pgjobs as a non-root user, or set "
                "PGJOBS_DSN to a PostgreSQL server of yours"
            )
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        _chown_tree(pgdata, user)
    client = pwd.getpwuid(os.geteuid()).pw_name
    if not (pgdata / "PG_VERSION").exists():
        pgserver.initdb(
            ["--auth=reject", "--encoding=utf8", "-U", _SUPERUSER],
            pgdata=pgdata,
            user=user,
        )
    _write_auth(pgdata, client, user)
    socket_dir = _socket_dir(pgdata, user)
    pgserver.pg_ctl(
        ["-w", "-o", '-h ""', "-o", f'-k "{socket_dir}"', "-l", str(pgdata / "log"), "start"],
        pgdata=pgdata,
        user=user,
        timeout=60,
    )


def _ensure_os_user(name: str) -> None:
    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)
        return
    useradd = shutil.which("useradd")
    if useradd is None:
        raise EmbeddedServerError(
            f"pgjobs: as root the embedded server runs as its own OS user ({name}), and "
            "useradd is missing; run pgjobs as a non-root user, or set PGJOBS_DSN to a "
            "PostgreSQL server of yours"
        )
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )


def _check_reachable(path: Path, user: str) -> None:
    """Every directory from / to ``path`` must let others through (o+x): pgjobs
    changes no permission outside its own home, unlike pgserver."""
    for directory in [path, *path.parents]:
        if not directory.exists():
            continue
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            raise EmbeddedServerError(
                f"pgjobs: the embedded server runs as the OS user {user}, which may not enter "
                f"{directory} (mode {stat.S_IMODE(mode):o}), and pgjobs changes no permission "
                "outside its own directory. Fix: run pgjobs as a non-root user, or set "
                "PGJOBS_HOME to a directory others may traverse (e.g. /var/lib/pgjobs/<project>), "
                "or set PGJOBS_DSN to a PostgreSQL server of yours"
            )


def _chown_tree(root: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    if root.stat().st_uid == entry.pw_uid:
        return
    # A data directory made by pgserver (its shared "pgserver" user) moves to
    # this directory's own user.
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.chown(name, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def _write_auth(pgdata: Path, client: str, user: str | None) -> None:
    """Unix-socket peer auth, and only for the OS user who runs pgjobs."""
    hba = pgdata / "pg_hba.conf"
    ident = pgdata / "pg_ident.conf"
    hba.write_text(
        "# Written by pgjobs on every start: only the OS user who runs pgjobs may connect.\n"
        "local all all peer map=pgjobs\n"
    )
    ident.write_text(f"pgjobs {client} {_SUPERUSER}\n")
    for path in (hba, ident):
        path.chmod(0o600)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(path, entry.pw_uid, entry.pw_gid)


def _socket_dir(pgdata: Path, user: str | None) -> Path:
    """A directory only the server's user may enter: beside the data directory,
    or, when that path is too long for a socket, a fresh one made by mkdtemp
    (mode 0700, a name no one else can have taken)."""
    candidate = pgdata.parent / "run"
    if len(str(candidate)) <= _MAX_SOCKET_DIR:
        candidate.mkdir(mode=0o700, exist_ok=True)
        directory = candidate
    else:
        directory = Path(tempfile.mkdtemp(prefix="pgjobs-"))
    directory.chmod(0o700)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    return directory
