"""A private PostgreSQL cluster: initdb in a temporary directory, a free
port, and pg_ctl, never the machine's shared server. For the benchmarks that
need a server of their own (bench/netns.py) and the tests that stop, restart
or break the server; here, so that the benchmarks depend on nothing in tests/."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

SYSTEM_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServer:
    """A throwaway PostgreSQL cluster this test owns and may stop at will."""

    def __init__(self, root: Path, settings: dict[str, str] | None = None) -> None:
        # postgresql.conf lines after the defaults below (later lines win).
        self.settings = settings or {}
        self.bindir = SYSTEM_BIN if (SYSTEM_BIN / "pg_ctl").exists() else self._pgserver_bin()
        self.root = root
        self.pgdata = root / "data"
        self.logfile = root / "server.log"
        self.port = _free_port()
        # initdb and pg_ctl refuse to run as root: run them as an ordinary account.
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres" if _user_exists("postgres") else self._pgserver_user()
            pw = pwd.getpwnam(self.user)
            os.chown(root, pw.pw_uid, pw.pw_gid)
        self.dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    @staticmethod
    def _pgserver_bin() -> Path:
        from pgserver._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH)

    @staticmethod
    def _pgserver_user() -> str:
        from pgserver.utils import ensure_user_exists

        ensure_user_exists("pgserver")
        return "pgserver"

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        subprocess.run(
            [str(self.bindir / program), "-D", str(self.pgdata), *args],
            cwd=self.root,
            user=self.user,
            check=check,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def init(self) -> None:
        self._run("initdb", "--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-sync")
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "max_connections = 50\n"
                # A test cluster: durability across an OS crash is not under test.
                "fsync = off\nfull_page_writes = off\n"
            )
            conf.writelines(f"{name} = '{value}'\n" for name, value in self.settings.items())

    def start(self) -> None:
        self._run("pg_ctl", "--wait", "--timeout=60", "--log", str(self.logfile), "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "--wait", "--timeout=60", "--mode", mode, "stop")

    def destroy(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._run("pg_ctl", "--wait", "--mode=immediate", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def private_server(
    prefix: str = "pgjobs-private-", settings: dict[str, str] | None = None
) -> Iterator[PrivateServer]:
    """A started private cluster, destroyed afterwards whatever happens;
    ``settings`` override the test defaults (fsync off, 50 sessions)."""
    server = PrivateServer(Path(tempfile.mkdtemp(prefix=prefix)), settings)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()
