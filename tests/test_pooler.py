"""PgBouncer in transaction mode is a supported deployment (pgjobs.pooler).

A real PgBouncer (Debian's ``pgbouncer``; see tests/support/pgbouncer.py for
what happens when it is missing) pools the test database on a few server
connections; workers, the CLI, the Python API and a bystander client all go
through it. The worker is not told: it detects the pooler.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgjobs
from bench.pgbouncer import Bouncer
from pgjobs import pooler, registry
from pgjobs.statements import maintenance
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.session import connect
from tests.support import pgbouncer, pooler_handlers, queries, workers
from tests.support.pooler_handlers import DIRECT_ENV, QUEUE
from tests.support.workers import ROOT, Worker

WaitFor = Callable[..., Any]

# What pgjobs sets for its own transactions, and a bystander must never see.
_SETTINGS = (
    "statement_timeout",
    "idle_in_transaction_session_timeout",
    "synchronous_commit",
    "jit",
    "application_name",
)
_OBSERVE = "select pg_backend_pid(), array(select pg_listening_channels()), " + ", ".join(
    f"current_setting('{name}')" for name in _SETTINGS
)


@pytest.fixture(scope="module")
def bouncer(server_dsn: str) -> Iterator[Bouncer]:
    with pgbouncer.running(server_dsn, pool_size=4) as running:
        yield running


@pytest.fixture
def pooled(dsn: str, bouncer: Bouncer) -> Iterator[str]:
    """The test database through PgBouncer, job types and side tables in place."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(pooler_handlers.SIDE_TABLES)
        for name, spec in registry.registered().items():
            if name.startswith("pb."):
                registry.upsert(conn, spec)
    yield bouncer.dsn_for(dsn)


class Bystander(threading.Thread):
    """Another client of the pool, asking its server connection what is set
    and listened to, and catching any notification, until stopped."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        # The setting the README asks of applications behind PgBouncer.
        self.conn = psycopg.connect(dsn, autocommit=True, prepare_threshold=None)
        self.notes: list[str] = []
        self.conn.add_notify_handler(lambda note: self.notes.append(note.channel))
        self.baseline = self.look()[1:]
        self.seen: list[tuple[Any, ...]] = []
        self.backends: set[int] = set()
        self.stopped = threading.Event()

    def look(self) -> tuple[Any, ...]:
        row = self.conn.execute(_OBSERVE).fetchone()
        assert row is not None
        return tuple(row)

    def run(self) -> None:
        while not self.stopped.wait(0.02):
            backend, *rest = self.look()
            self.backends.add(backend)
            if tuple(rest) != self.baseline:
                self.seen.append(tuple(rest))

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)
        self.conn.close()


def _enqueue_concurrently(dsn: str, clients: int, per_client: int) -> list[int]:
    """``clients`` threads, each on a connection with psycopg's defaults
    (statements prepared after 5 runs): pgjobs.enqueue must be safe on it."""
    ids: list[list[int]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                for n in range(per_client):
                    if index % 2:  # half in the caller's own transactions
                        with conn.transaction():
                            r = pgjobs.enqueue(conn, "pb.work", {"n": n})
                    else:
                        r = pgjobs.enqueue(conn, "pb.work", {"n": n})
                    ids[index].append(r.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return [job_id for chunk in ids for job_id in chunk]


def _old_finished_jobs(conn: psycopg.Connection[Any], count: int) -> list[int]:
    ids = [pgjobs.enqueue(conn, "pb.work").id for _ in range(count)]
    conn.execute(
        "update pgjobs.jobs set state = 'canceled', finished_at = now() - interval '40 days',"
        " created_at = now() - interval '40 days', lease_token = 0 where id = any(%s)",
        (ids,),
    )
    return ids


def _states(direct: psycopg.Connection[Any], ids: list[int]) -> dict[int, tuple[str, Any]]:
    rows = direct.execute(
        "select id, state, last_error_class from pgjobs.jobs where id = any(%s)", (ids,)
    ).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def _started_pid(direct: psycopg.Connection[Any], job_id: int) -> int | None:
    row = direct.execute("select pid from pb_started where job_id = %s", (job_id,)).fetchone()
    return int(row[0]) if row else None


@pytest.mark.slow
def test_through_pgbouncer_every_job_runs_once_cancels_and_timeouts_hold_and_nothing_leaks(
    dsn: str, pooled: str, monkeypatch: pytest.MonkeyPatch, wait_for: WaitFor
) -> None:
    monkeypatch.setenv(DIRECT_ENV, dsn)
    direct = psycopg.connect(dsn, autocommit=True)
    app = psycopg.connect(pooled, autocommit=True)  # psycopg's defaults, as users have them
    bystander = Bystander(pooled)
    bystander.start()
    old = _old_finished_jobs(app, 3)
    with workers.workers(pooled) as pool:
        worker = pool.start_args(
            "--import", "tests.support.pooler_handlers", "--queues", QUEUE,
            "--processes", "2", "--lease", "3", "--cancel-grace", "0.5", "--prune-after", "30d",
        )  # fmt: skip
        started = wait_for(lambda: worker.event("worker_started"), timeout=20)
        assert started["pooler"] is True  # detected: the worker was not told

        enqueued = _enqueue_concurrently(pooled, clients=4, per_client=100)
        parent = pgjobs.enqueue(app, "pb.work", {"n": -1}).id
        children = [pgjobs.enqueue(app, "pb.work", depends_on=[parent]).id for _ in range(3)]
        flaky = [pgjobs.enqueue(app, "pb.flaky").id for _ in range(3)]
        hang = pgjobs.enqueue(app, "pb.hang").id
        pg_hang = pgjobs.enqueue(app, "pb.pg_hang").id
        stubborn = pgjobs.enqueue(app, "pb.stubborn").id

        # A cancel of a running handler that never calls ctx: enforced by a kill.
        wait_for(lambda: _started_pid(direct, stubborn), timeout=30, message="stubborn never ran")
        assert pgjobs.cancel(app, stubborn) == "running"
        wait_for(lambda: _states(direct, [stubborn])[stubborn][0] == "canceled", timeout=15)
        assert wait_for(lambda: workers.pid_gone(_started_pid(direct, stubborn) or 0))

        finishing = [*enqueued, parent, *children, *flaky, hang, pg_hang]
        wait_for(
            lambda: all(s in ("completed", "dead") for s, _ in _states(direct, finishing).values()),
            timeout=60,
            interval=0.2,
            message="jobs left unfinished",
        )
        done = wait_for(lambda: worker.event("prune_done"), message="no prune through the pooler")
        bystander.stop()
        _check_outcomes(dsn, direct, worker, enqueued, parent, children, flaky, hang, pg_hang)
        assert done["pruned"] == len(old)
        assert not direct.execute(
            "select id from pgjobs.jobs where id = any(%s)", (old,)
        ).fetchall()
    # Nothing of pgjobs' sessions reached the bystander, which shared their servers.
    assert bystander.seen == [], bystander.seen
    assert bystander.notes == []
    assert len(bystander.backends) >= 2
    counts = {
        "enqueued": len(finishing) + 1,
        "completed": len(enqueued) + 1 + len(children) + len(flaky),
        "duplicates": 0,
        "enforced_cancels": 1,
    }
    print("pgbouncer run:", json.dumps(counts))  # shown with pytest -s
    app.close()
    direct.close()


def _check_outcomes(
    direct_dsn: str,
    direct: psycopg.Connection[Any],
    worker: Worker,
    enqueued: list[int],
    parent: int,
    children: list[int],
    flaky: list[int],
    hang: int,
    pg_hang: int,
) -> None:
    completed = [*enqueued, parent, *children, *flaky]
    states = _states(direct, completed)
    assert {s for s, _ in states.values()} == {"completed"}
    # Every completion committed exactly once (pb_done commits with it).
    runs = dict(direct.execute("select job_id, count(*) from pb_done group by job_id").fetchall())
    assert {job_id: runs.get(job_id) for job_id in completed} == dict.fromkeys(completed, 1)
    attempts = dict(
        direct.execute("select id, attempt from pgjobs.jobs where id = any(%s)", (flaky,))
    )
    assert attempts == dict.fromkeys(flaky, 3)
    order = direct.execute(
        "select bool_and(c.started_at >= p.finished_at) from pgjobs.jobs c, pgjobs.jobs p"
        " where c.id = any(%s) and p.id = %s",
        (children, parent),
    ).fetchone()
    assert order == (True,)
    # Hard timeouts: the process is killed; a query in the server stops too.
    assert _states(direct, [hang])[hang] == ("dead", "timeout")
    assert _states(direct, [pg_hang])[pg_hang][0] == "dead"
    for job_id in (hang, pg_hang):
        assert workers.pid_gone(_started_pid(direct, job_id) or 0)
    # The killed process's query outlives it on the server (no pg_terminate_backend
    # through a pooler) only until the job's statement_timeout.
    queries.wait_for(
        lambda: (
            queries.scalar(
                direct_dsn,
                "select count(*) from pg_stat_activity where query = 'select pg_sleep(600)'"
                " and state = 'active'",
            )
            == 0
        ),
        timeout=10,
        message="the timed-out job's query is still running on the server",
    )
    text = worker.output()
    assert "prepared statement" not in text
    assert "worker_process_died" not in text


def test_pooled_worker_sessions_set_their_settings_per_transaction_only(
    dsn: str, pooled: str
) -> None:
    cfg = WorkerConfig(dsn=pooled, pooler=True, statement_timeout_seconds=42)
    with (
        connect(cfg, "worker") as mine,
        psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as other,
    ):
        for _ in range(20):  # many transactions, on whichever server the pool gives
            assert mine.execute("show statement_timeout").fetchone() == ("42s",)
            assert mine.execute("show jit").fetchone() == ("off",)
            assert other.execute("show statement_timeout").fetchone() == ("0",)
            assert other.execute("show jit").fetchone() == ("on",)
        # VACUUM cannot run in the settings' transaction: it runs bare.
        with pytest.raises(psycopg.errors.ActiveSqlTransaction):
            maintenance.vacuum(mine)
        with pooler.bare(mine):
            maintenance.vacuum(mine)


def test_pgjobs_listen_through_a_pooler_says_it_needs_a_direct_connection(pooled: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pgjobs.cli", "listen", "--dsn", pooled, "--timeout", "1"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "PGJOBS_POOLER"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "LISTEN" in result.stderr and "direct connection" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.slow
def test_the_cli_works_through_a_pooler(dsn: str, pooled: str) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pgjobs.cli", *args, "--dsn", pooled],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert cli("migrate").stdout.strip() == "up to date"
    ids = [json.loads(cli("enqueue", "pb.work").stdout)["id"] for _ in range(7)]
    assert len(set(ids)) == 7
    for job_id in ids:  # more runs of each statement than psycopg's prepare threshold
        shown = cli("status", str(job_id))
        assert shown.returncode == 0, shown.stderr
    started = time.monotonic()
    assert cli("cancel", str(ids[0])).returncode == 0
    assert time.monotonic() - started < 30
