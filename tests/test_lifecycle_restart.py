"""Postgres faults under a running worker: the server restarts, or the worker's
sessions are killed. The worker reconnects with backoff; every job completes,
and none completes twice.

The restart runs against a private server started for this module (never the
machine's shared one): initdb in a temporary directory, a free port, stopped
with a fast shutdown mid-run and started again on the same port.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs.migrate import migrate
from tests.support import queries, workers

pytestmark = pytest.mark.slow

WaitFor = Callable[..., Any]
SYSTEM_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServer:
    """A throwaway PostgreSQL cluster this test owns and may stop at will."""

    def __init__(self, root: Path) -> None:
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


@pytest.fixture(scope="module")
def private_server() -> Iterator[PrivateServer]:
    server = PrivateServer(Path(tempfile.mkdtemp(prefix="pgjobs-restart-")))
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


def _enqueue_once(dsn: str, count: int) -> list[int]:
    with psycopg.connect(dsn) as conn:
        results = pgjobs.enqueue_many(
            conn,
            [
                {"job_type": "lc.once", "payload": {"n": i}, "organization": "acme"}
                for i in range(count)
            ],
        )
    return [r.id for r in results]


def _completed(dsn: str) -> int:
    with contextlib.suppress(psycopg.OperationalError):
        return int(
            queries.scalar(dsn, "select count(*) from pgjobs.jobs where state = 'completed'")
        )
    return -1  # the server is not back yet


def assert_each_completed_once(dsn: str, ids: list[int]) -> None:
    assert dict(queries.rows(dsn, "select state, count(*) from pgjobs.jobs group by state")) == {
        "completed": len(ids)
    }
    # lc_once commits with the completion, one row per job (its primary key).
    assert queries.scalar(dsn, "select count(*) from lc_once") == len(ids)
    assert (
        queries.rows(
            dsn,
            """
        select job_id from pgjobs.job_events where to_state = 'completed'
         group by job_id having count(*) <> 1""",
        )
        == []
    )
    # Each job's one completion is the attempt that wrote its evidence.
    assert (
        queries.rows(
            dsn,
            """
        select j.id from pgjobs.jobs j left join lc_once o on o.job_id = j.id
         where o.attempt is distinct from j.attempt
            or (j.result->>'attempt')::int <> j.attempt""",
        )
        == []
    )


def assert_outages_cost_few_attempts(dsn: str, outages: int, processes: int) -> None:
    """A lost connection costs the attempt in flight, not the batch claimed with
    it: jobs not started yet go back to the queue with their attempt unchanged."""
    retried = queries.scalar(dsn, "select count(*) from pgjobs.jobs where attempt > 1")
    assert retried <= 4 * outages * processes


def test_a_postgres_restart_mid_run_loses_no_job_and_completes_none_twice(
    private_server: PrivateServer, wait_for: WaitFor
) -> None:
    dsn = private_server.dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
    workers.prepare(dsn)
    ids = _enqueue_once(dsn, 2000)

    with workers.workers(dsn) as pool:
        worker = pool.start(processes=2, lease=3)
        wait_for(lambda: _completed(dsn) >= 400, timeout=30, message="the run did not start")

        completed_before = _completed(dsn)
        private_server.stop("fast")
        private_server.start()
        assert completed_before < len(ids)  # the restart came mid-run

        wait_for(
            lambda: _completed(dsn) == len(ids),
            timeout=60,
            message="not every job completed after the restart",
        )
        assert worker.proc.poll() is None
        assert len(worker.children()) == 2
        output = worker.output()
    assert "worker_reconnect" in output and "supervisor_connection_lost" in output

    assert_each_completed_once(dsn, ids)
    assert_outages_cost_few_attempts(dsn, outages=1, processes=2)


def test_killed_worker_sessions_lose_no_job(dsn: str, wait_for: WaitFor) -> None:
    workers.prepare(dsn)
    ids = _enqueue_once(dsn, 1500)
    kill = """
        select count(pg_terminate_backend(pid)) from pg_stat_activity
         where datname = current_database() and application_name like 'pgjobs %%'"""

    with workers.workers(dsn) as pool:
        worker = pool.start(processes=2, lease=3)
        for done in (300, 700, 1100):
            wait_for(lambda: _completed(dsn) >= done, timeout=30)  # noqa: B023
            killed = queries.scalar(dsn, kill)
            assert killed >= 4  # the supervisor's, and per process: control, beacon, job
        assert _completed(dsn) < len(ids)  # the last kill came mid-run
        wait_for(
            lambda: _completed(dsn) == len(ids),
            timeout=60,
            message="not every job completed after their sessions were killed",
        )
        assert worker.proc.poll() is None
        assert len(worker.children()) == 2

    assert_each_completed_once(dsn, ids)
    assert_outages_cost_few_attempts(dsn, outages=3, processes=2)
