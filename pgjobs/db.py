"""Which PostgreSQL pgjobs talks to.

An explicit DSN wins, then ``PGJOBS_DSN``; with neither, pgjobs runs a server of
its own from the binaries the ``pgserver`` package ships, so ``pip install
pgjobs`` followed by one command works on a machine with no Postgres.

That embedded server is started detached and left running: every CLI command is
a separate process, and paying initdb plus a cold start on each ``pgjobs status``
would make the CLI unusable. The next command finds it through its
``postmaster.pid`` and connects over the unix socket beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

if TYPE_CHECKING:
    from pgserver.utils import PostmasterInfo

DSN_ENV = "PGJOBS_DSN"
HOME_ENV = "PGJOBS_HOME"
TEST_DSN_ENV = "PGJOBS_TEST_DSN"

# The machine's own server, when it answers, is preferred by the tests: it is
# the version users run (15 here) and costs no startup.
LOCAL_TEST_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"

_SUPERUSER = "postgres"  # the role pgserver's initdb creates


def resolve_dsn(dsn: str | None = None) -> str:
    """The DSN every command uses; starts the embedded server only as a last resort."""
    if dsn:
        return dsn
    from_env = os.environ.get(DSN_ENV)
    if from_env:
        return from_env
    return embedded_dsn()


def default_home() -> Path:
    """``PGJOBS_HOME``, else one directory per user: ``$XDG_DATA_HOME/pgjobs``
    (``~/.local/share/pgjobs``), or ``/var/lib/pgjobs`` for root.

    Per user, not per working directory: a home under ``./.pgjobs`` started one
    more server in every directory a command ran from. Root is the exception
    because the server then runs as an unprivileged OS user of its own
    (pgjobs.embedded), which must be able to reach the data: ``/root`` is closed
    to it, and pgjobs opens no directory it did not make.
    A project that wants a server of its own sets ``PGJOBS_HOME``.
    """
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser().resolve()
    if os.geteuid() == 0:
        return Path("/var/lib/pgjobs")
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return (Path(data_home) / "pgjobs").expanduser().resolve()


def embedded_info(data_dir: Path | None = None) -> PostmasterInfo | None:
    """The running embedded server on ``data_dir`` (default ``<home>/pgdata``), or
    None; never starts one (``pgjobs server status``)."""
    pgdata = _pgdata(data_dir)
    if not pgdata.exists():
        return None
    with _locked(pgdata.parent / "lock"):
        return _running_postmaster(pgdata)


def embedded_pgdata(data_dir: Path | None = None) -> Path:
    """The data directory the embedded server uses (``<home>/pgdata`` by default)."""
    return _pgdata(data_dir)


def is_embedded(dsn: str) -> bool:
    """Whether ``dsn`` points at the embedded server of the current home."""
    host = conninfo_to_dict(dsn).get("host") or ""
    info = embedded_info()
    return info is not None and info.socket_dir is not None and host == str(info.socket_dir)


def dsn_for_info(info: PostmasterInfo) -> str:
    """The DSN of a running embedded server's ``postgres`` database."""
    return _dsn_for(info)


def embedded_dsn(data_dir: Path | None = None) -> str:
    """Start the embedded server on ``data_dir`` (default ``<home>/pgdata``) unless
    it already runs, and return a DSN for its ``postgres`` database.

    Safe to call from several processes at once: starts are serialized by a
    lock file beside the data directory, so exactly one of them runs initdb.
    """
    pgdata = _pgdata(data_dir)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with _locked(pgdata.parent / "lock"):
        info = _running_postmaster(pgdata)
        if info is None:
            info = _start(pgdata)
    return _dsn_for(info)


def stop_embedded(data_dir: Path | None = None) -> bool:
    """Stop the embedded server on ``data_dir``; False when none was running.

    Nothing stops it otherwise (that is the point), so tests and a future
    ``pgjobs server stop`` need a way to.
    """
    pgdata = _pgdata(data_dir)
    if not pgdata.exists():
        return False
    with _locked(pgdata.parent / "lock"):
        if _running_postmaster(pgdata) is None:
            return False
        pgserver = _import_pgserver()
        # pg_ctl refuses to run as root; pgserver runs the server as the owner
        # of the data directory in that case, and so must we.
        owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name if os.geteuid() == 0 else None
        pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=owner, timeout=60)
    return True


def test_server_dsn() -> str:
    """The server the test suite uses: ``PGJOBS_TEST_DSN``, else the machine's
    Postgres on 127.0.0.1:5432 if it answers within 2 s, else an embedded one.

    The embedded fallback lives under ``PGJOBS_HOME`` or the temp directory, not
    under ``~``: as root the server runs as an unprivileged OS user of its own,
    which must be able to reach its data directory (/root is closed to it, and
    pgjobs opens no directory it did not make).
    """
    from_env = os.environ.get(TEST_DSN_ENV)
    if from_env:
        return from_env
    try:
        with psycopg.connect(LOCAL_TEST_DSN, connect_timeout=2):
            return LOCAL_TEST_DSN
    except psycopg.OperationalError:
        pass
    home = os.environ.get(HOME_ENV) or Path(tempfile.gettempdir()) / f"pgjobs-test-{os.getuid()}"
    return embedded_dsn(Path(home) / "pgdata")


# The name starts with "test_" only because that is what it is for; keep pytest
# from collecting it when a test module imports it.
test_server_dsn.__test__ = False  # type: ignore[attr-defined]


def with_dbname(dsn: str, dbname: str) -> str:
    """The same server and credentials, another database: per-test databases are
    reached this way whatever form (URI or keywords) the DSN came in."""
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo("", **params)


def create_database(admin_dsn: str, name: str, template: str | None = None) -> None:
    """Create ``name``, cloned from ``template`` when given (a file copy: much
    cheaper than migrating each test database)."""
    if template is None:
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    else:
        stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
    # CREATE DATABASE cannot run inside a transaction block.
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(stmt)


def drop_database(admin_dsn: str, name: str) -> None:
    """Drop ``name`` even while sessions (a killed worker's, a leaked LISTEN) are
    still connected to it; a missing database is not an error."""
    stmt = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(stmt)


def _pgdata(data_dir: Path | None) -> Path:
    return (data_dir or default_home() / "pgdata").expanduser().resolve()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Opened for append so that taking the lock never truncates anything; the
    # descriptor is not inherited by pg_ctl (Python's default), so the detached
    # server never holds it.
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _import_pgserver() -> ModuleType:
    # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset
    # (containers, CI), which would print on every CLI command.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    return pgserver


def _running_postmaster(pgdata: Path) -> PostmasterInfo | None:
    """The ``PostmasterInfo`` of a ready server on ``pgdata``, or None.

    pgserver (and Postgres itself) take any live process whose pid is in the
    lock files for a running server. After a crash or reboot that pid can be
    something else (another cluster's backend, say) or an unreaped zombie (in
    containers whose init is slow to reap): pgserver would then hand out a DSN
    nobody answers on, and Postgres would refuse to start. Lock files left by a
    server that is certainly gone are removed here so that the start proceeds.
    """
    if not (pgdata / "postmaster.pid").exists():
        return None
    _import_pgserver()
    import psutil  # a dependency of pgserver
    from pgserver.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError):
        return None  # half-written by a server still starting; pgserver waits for it
    if info is None:
        return None
    try:
        process = psutil.Process(info.pid)
        # A postmaster and its backends all run with the data directory as cwd.
        ours = (
            process.status() != psutil.STATUS_ZOMBIE
            and process.name() == "postgres"
            and Path(process.cwd()).resolve() == pgdata
        )
    except psutil.ZombieProcess:
        ours = False
    except psutil.NoSuchProcess:
        return None  # a dead pid: Postgres itself ignores such lock files
    except psutil.AccessDenied:
        ours = True  # cannot tell; never delete the lock files of a server that may be live
    if not ours:
        _remove_lock_files(pgdata, info)
        return None
    return info if info.status == "ready" else None


def _remove_lock_files(pgdata: Path, info: PostmasterInfo) -> None:
    locks = [pgdata / "postmaster.pid"]
    if info.socket_path is not None:
        locks.append(info.socket_path.with_name(info.socket_path.name + ".lock"))
    for lock in locks:
        with contextlib.suppress(OSError):
            if lock.read_text().split("\n", 1)[0].strip() == str(info.pid):
                lock.unlink()


def _start(pgdata: Path) -> PostmasterInfo:
    from pgjobs import embedded

    pgserver = _import_pgserver()
    # Not pgserver's PostgresServer: its start is not private (pgjobs/embedded.py).
    embedded.start(pgserver, pgdata)
    info = _running_postmaster(pgdata)
    if info is None:
        log = pgdata / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"the embedded server did not start; its log ends:\n{tail}")
    return info


def _dsn_for(info: PostmasterInfo) -> str:
    # pgserver listens on a unix socket only (no TCP port to collide with the
    # machine's own server); libpq takes the socket's directory as host.
    host = str(info.socket_dir) if info.socket_dir is not None else info.hostname
    return make_conninfo("", host=host, port=str(info.port), user=_SUPERUSER, dbname=_SUPERUSER)
