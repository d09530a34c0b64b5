"""A throwaway PgBouncer in transaction mode in front of a PostgreSQL server,
for the pooler tests and the wake-up latency measurement.

Debian's ``pgbouncer`` package provides the binary (``.ci/run`` installs it).
It listens on a free port of 127.0.0.1, lets every user of ``auth_file`` in
without a password (``trust``; the server behind decides), and pools each
(database, user) pair on a few server connections, so that clients really do
share them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def binary() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((c for c in _CANDIDATES if os.access(c, os.X_OK)), None)


@dataclass
class Bouncer:
    port: int
    proc: subprocess.Popen[bytes]
    logfile: Path

    def dsn_for(self, dsn: str) -> str:
        """``dsn`` (same database and user) through this PgBouncer."""
        params = conninfo_to_dict(dsn)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo("", **params)

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running(
    server_dsn: str, *, pool_size: int = 5, users: tuple[str, ...] = ()
) -> Iterator[Bouncer]:
    """PgBouncer (transaction mode) in front of ``server_dsn``'s server for the block."""
    exe = binary()
    if exe is None:
        raise FileNotFoundError("pgbouncer is not installed (apt-get install -y pgbouncer)")
    server = conninfo_to_dict(server_dsn)
    host = str(server.get("host") or "127.0.0.1")
    port = _free_port()
    home = Path(tempfile.mkdtemp(prefix="pgjobs-pgbouncer-"))
    names = {str(server.get("user") or "postgres"), *users}
    (home / "userlist.txt").write_text("".join(f'"{u}" ""\n' for u in sorted(names)))
    ini = home / "pgbouncer.ini"
    logfile = home / "pgbouncer.log"
    ini.write_text(
        "[databases]\n"
        f"* = host={host} port={server.get('port') or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {home / 'userlist.txt'}\n"
        f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 500\n"
        f"logfile = {logfile}\npidfile = {home / 'pgbouncer.pid'}\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        "server_check_delay = 0\n"
    )
    args = [exe, "-q", str(ini)]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        owner = _unprivileged_user()
        os.chown(home, owner.pw_uid, owner.pw_gid)
        for path in home.iterdir():
            os.chown(path, owner.pw_uid, owner.pw_gid)
        args[1:1] = ["-u", owner.pw_name]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    bouncer = Bouncer(port, proc, logfile)
    try:
        _wait_ready(bouncer, server_dsn)
        yield bouncer
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # immediate shutdown
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(home, ignore_errors=True)


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("pgbouncer will not run as root, and there is no user to run it as")


def _wait_ready(bouncer: Bouncer, server_dsn: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if bouncer.proc.poll() is not None:
            err = bouncer.proc.stderr.read().decode(errors="replace") if bouncer.proc.stderr else ""
            raise RuntimeError(f"pgbouncer exited {bouncer.proc.returncode}: {err}{bouncer.log()}")
        try:
            dsn = bouncer.dsn_for(server_dsn)
            with psycopg.connect(dsn, connect_timeout=2, prepare_threshold=None) as conn:
                conn.execute("select 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
