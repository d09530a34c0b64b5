"""Database faults a production worker meets, each survived or ended cleanly:
a database turned read-only, a full disk, the server stopped for a while, and
SIGTERM while it is away. Every job completes once the fault clears, none
twice (lc.once commits its evidence with its completion)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from bench import servers
from bench.servers import PrivateServer
from pgjobs.migrate import migrate
from tests.support import queries, workers
from tests.test_lifecycle_restart import _completed, _enqueue_once, assert_each_completed_once

pytestmark = pytest.mark.slow

WaitFor = Callable[..., Any]

_KILL_SESSIONS = """
    select count(pg_terminate_backend(pid)) from pg_stat_activity
     where datname = current_database() and application_name like 'pgjobs %%'"""


def _faults(worker: workers.Worker, sqlstate: str) -> list[dict[str, Any]]:
    """The fault events of ``sqlstate`` in the worker's log (psycopg may add a
    plain line of its own when a connection breaks mid-pipeline)."""
    found = []
    for line in worker.output().splitlines():
        if line.startswith("{") and f'"sqlstate": "{sqlstate}"' in line:
            for event in workers.json_objects(line):  # two processes may share a line
                if event.get("sqlstate") == sqlstate and event.get("event", "").endswith(
                    ("fault", "lost")
                ):
                    found.append(event)
    return found


def _execute(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def _dbname(dsn: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])


def test_a_database_turned_read_only_for_a_while_is_waited_out(
    dsn: str, server_dsn: str, wait_for: WaitFor
) -> None:
    workers.prepare(dsn)
    ids = _enqueue_once(dsn, 600)
    database = pgsql.Identifier(_dbname(dsn))
    with workers.workers(dsn) as pool:
        worker = pool.start(processes=2, lease=3)
        wait_for(lambda: _completed(dsn) >= 50, timeout=30, message="the run did not start")
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                pgsql.SQL("alter database {} set default_transaction_read_only = on").format(
                    database
                )
            )
            queries.scalar(dsn, _KILL_SESSIONS)  # new sessions are read-only
            wait_for(
                lambda: len(_faults(worker, "25006")) >= 3,
                timeout=30,
                message="the worker never met the read-only database",
            )
            stalled = _completed(dsn)
            admin.execute(
                pgsql.SQL("alter database {} reset default_transaction_read_only").format(database)
            )
        assert stalled < len(ids)
        wait_for(
            lambda: _completed(dsn) == len(ids),
            timeout=90,
            message="not every job completed once the database took writes again",
        )
        assert worker.proc.poll() is None
        assert len(worker.children()) == 2
    assert_each_completed_once(dsn, ids)


_DISK_FULL = """
create sequence if not exists disk_full_hits;
create table if not exists disk_full (on_since timestamptz);
-- A bulk enqueue inserts as pgjobs_owner (pgjobs.enqueue_checked), which then
-- runs this trigger too.
grant select on disk_full to public;
grant usage on sequence disk_full_hits to public;
create or replace function disk_full_raise() returns trigger language plpgsql as $$
begin
    if exists (select from public.disk_full) then
        perform nextval('public.disk_full_hits');
        raise exception 'could not extend file: No space left on device'
              using errcode = '53100';
    end if;
    return null;
end $$;
create trigger disk_full before insert or update or delete on pgjobs.jobs
    for each statement execute function disk_full_raise();
create trigger disk_full before insert or update or delete on pgjobs.worker_processes
    for each statement execute function disk_full_raise();
"""


def test_a_full_disk_is_retried_with_a_real_backoff(dsn: str, wait_for: WaitFor) -> None:
    workers.prepare(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_DISK_FULL)
    ids = _enqueue_once(dsn, 600)
    with workers.workers(dsn) as pool:
        worker = pool.start(processes=2, lease=3)
        wait_for(lambda: _completed(dsn) >= 50, timeout=30, message="the run did not start")
        _execute(dsn, "insert into disk_full values (now())")
        started = time.monotonic()
        # Each loop backs off 0.1, 0.2, 0.4... s: wait until the workers' own
        # waits have grown past a second, then count what they sent meanwhile.
        wait_for(
            lambda: any(f["retry_in"] >= 1.6 for f in _faults(worker, "53100")),
            timeout=40,
            message="the backoff never grew",
        )
        seconds = time.monotonic() - started
        hits = queries.scalar(dsn, "select last_value from disk_full_hits")
        _execute(dsn, "delete from disk_full")
        # Five loops (a supervisor, two claim loops, two beacons) at 0.1 s, then
        # slower: a few dozen statements, not hundreds per second.
        assert hits <= 8 * seconds + 40, (hits, seconds)
        wait_for(
            lambda: _completed(dsn) == len(ids),
            timeout=90,
            message="not every job completed once the disk had room",
        )
        assert worker.proc.poll() is None
        assert len(worker.children()) == 2
    assert_each_completed_once(dsn, ids)


@pytest.fixture(scope="module")
def private_server() -> Iterator[PrivateServer]:
    with servers.private_server("pgjobs-faults-") as server:
        yield server


def _private_database(server: PrivateServer, name: str) -> str:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(pgsql.SQL("create database {}").format(pgsql.Identifier(name)))
    dsn = f"{server.dsn.rsplit('dbname=', 1)[0]}dbname={name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
    workers.prepare(dsn)
    return dsn


def test_postgres_stopped_for_a_while_then_started_loses_nothing(
    private_server: PrivateServer, wait_for: WaitFor
) -> None:
    dsn = _private_database(private_server, "stopped_a_while")
    ids = _enqueue_once(dsn, 1000)
    with workers.workers(dsn) as pool:
        worker = pool.start(processes=2, lease=3)
        wait_for(lambda: _completed(dsn) >= 100, timeout=30, message="the run did not start")
        private_server.stop("fast")
        try:
            # Down long enough for every loop to retry a few times.
            wait_for(
                lambda: (
                    worker.output().count("worker_reconnect") >= 4
                    and "supervisor_reconnect" in worker.output()
                ),
                timeout=30,
                message="the worker did not wait for the server",
            )
        finally:
            private_server.start()
        wait_for(lambda: _completed(dsn) == len(ids), timeout=90)
        assert worker.proc.poll() is None
        assert len(worker.children()) == 2
    assert_each_completed_once(dsn, ids)


def test_sigterm_while_postgres_is_down_ends_the_worker_within_its_grace(
    private_server: PrivateServer, wait_for: WaitFor
) -> None:
    dsn = _private_database(private_server, "sigterm_while_down")
    ids = _enqueue_once(dsn, 1000)
    with workers.workers(dsn) as pool:
        worker = pool.start(processes=2, lease=2, grace=3)
        wait_for(lambda: _completed(dsn) >= 100, timeout=30, message="the run did not start")
        children = worker.children()
        private_server.stop("fast")
        try:
            wait_for(
                lambda: (
                    "supervisor_reconnect" in worker.output()
                    and "worker_reconnect" in worker.output()
                ),
                timeout=30,
            )
            stopped_at = time.monotonic()
            worker.proc.send_signal(signal.SIGTERM)
            code = worker.wait(15)
            took = time.monotonic() - stopped_at
        finally:
            private_server.start()
        assert code == 0
        assert took < 3 + 2, took  # the grace, and a little
        assert "worker_stopping" in worker.output()
        wait_for(lambda: all(workers.pid_gone(p) for p in children), timeout=5)
        # Once the server is back, nothing of the stopped worker runs: its
        # jobs come back by lease and a new worker completes them.
        pool.start(processes=2, lease=2)
        wait_for(lambda: _completed(dsn) == len(ids), timeout=90)
    assert_each_completed_once(dsn, ids)
