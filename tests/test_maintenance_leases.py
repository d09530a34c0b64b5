"""Maintenance turns (rescue, prune, vacuum) are rows of pgjobs.maintenance_leases:
no role without pgjobs grants can take or block one, whatever advisory lock
keys it holds, and a holder that dies gives its turn back once its lease ends.

Workers here are ``pgjobs worker`` subprocesses (``--import tests.support.handlers``).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pgjobs import registry
from pgjobs.statements import maintenance
from tests.support import factories, workers
from tests.support.workers import ROOT, Worker

WaitFor = Callable[..., Any]

# Every advisory lock key pgjobs' maintenance took before its turns were rows.
_OLD_KEYS_SQL = (
    "select pg_advisory_lock(hashtext('pgjobs.lease_rescue')),"
    " pg_advisory_lock(hashtext('pgjobs.prune')),"
    " pg_advisory_lock(%s)"
)
_OLD_VACUUM_KEY = 0x70676A6F6276
_UNSERVED = "t.other_queue"  # its queue is not the worker's: a rescued job stays put


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, spec in registry.registered().items():
            if name.startswith("t."):
                registry.upsert(conn, spec)
        yield conn


@pytest.fixture
def start_worker(dsn: str) -> Iterator[Callable[..., Worker]]:
    with workers.workers(dsn) as pool:
        yield lambda *args: pool.start_args(
            "--import", "tests.support.handlers", "--processes", "1", "--poll", "0.2",
            "--lease", "2", *args,
        )  # fmt: skip


@pytest.fixture
def stranger(server_dsn: str, dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A session of a login role with no grants at all, on the test's database."""
    role = f"pgjobs_test_stranger_{secrets.token_hex(4)}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(psycopg.sql.SQL("create role {} login").format(psycopg.sql.Identifier(role)))
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        params["user"] = role
        with psycopg.connect(psycopg.conninfo.make_conninfo("", **params), autocommit=True) as conn:
            yield conn
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                psycopg.sql.SQL("drop role if exists {}").format(psycopg.sql.Identifier(role))
            )


def _expired_running_job(conn: psycopg.Connection[Any]) -> int:
    job_id = factories.make_job(conn, "running", job_type=_UNSERVED)
    conn.execute(
        "update pgjobs.jobs set lease_expires_at = now() - interval '1 minute', worker = 'gone/1'"
        " where id = %s",
        (job_id,),
    )
    return job_id


def _rescued(conn: psycopg.Connection[Any], job_id: int) -> bool:
    """The lease rescue ended the attempt (the job may have run again since)."""
    row = conn.execute(
        "select count(*) from pgjobs.job_events where job_id = %s and from_state = 'running'"
        " and to_state = 'retrying' and error_class = 'lease_expired'",
        (job_id,),
    ).fetchone()
    return bool(row and row[0])


def _old_finished_jobs(conn: psycopg.Connection[Any], count: int) -> list[int]:
    ids = [factories.make_job(conn, "completed") for _ in range(count)]
    conn.execute(
        "update pgjobs.jobs set created_at = now() - interval '40 days',"
        " finished_at = now() - interval '40 days' where id = any(%s)",
        (ids,),
    )
    return ids


def _dead_tuples(dsn: str, count: int) -> None:
    """``count`` dead tuples in pgjobs.jobs (triggers off, as a bulk load would),
    reported to the statistics when the session ends."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("set session_replication_role = replica")
        conn.execute(
            "insert into pgjobs.jobs (id, job_type, queue, priority, payload, state, attempt,"
            " max_attempts, timeout_seconds) select nextval('pgjobs.jobs_id_seq'), 't.noop',"
            " 'default', 2, '{}', 'queued', 0, 1, 300 from generate_series(1, %s)",
            (count,),
        )
        conn.execute("delete from pgjobs.jobs where job_type = 't.noop' and state = 'queued'")


def _dead_tuple_count(conn: psycopg.Connection[Any]) -> int:
    conn.execute("select pg_stat_clear_snapshot()")
    row = conn.execute(
        "select n_dead_tup from pg_stat_user_tables where relid = 'pgjobs.jobs_active'::regclass"
    ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_a_stranger_holding_every_old_lock_key_blocks_no_rescue_prune_or_vacuum(
    dsn: str,
    db: psycopg.Connection[Any],
    stranger: psycopg.Connection[Any],
    start_worker: Callable[..., Worker],
    wait_for: WaitFor,
) -> None:
    # The stranger takes every key the maintenance ever locked, and keeps them.
    stranger.execute(_OLD_KEYS_SQL, (_OLD_VACUUM_KEY,))
    # It cannot take, lock or even read the turns themselves.
    for attempt in (
        "update pgjobs.maintenance_leases set holder = 'stranger', expires_at = 'infinity'",
        "insert into pgjobs.maintenance_leases values ('prune', 'stranger', 'infinity')",
        "select * from pgjobs.maintenance_leases for update",
        "lock table pgjobs.maintenance_leases in access exclusive mode",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), stranger.transaction():
            stranger.execute(attempt)

    # ours, not its (on the partition claims and completions write)
    db.execute("alter table pgjobs.jobs_active set (autovacuum_enabled = false)")
    expired = _expired_running_job(db)
    old = _old_finished_jobs(db, 3)
    _dead_tuples(dsn, 12_000)
    wait_for(lambda: _dead_tuple_count(db) >= 10_000, message="dead tuples never counted")

    worker = start_worker("--prune-after", "30d")
    pgjobs_enqueue = "insert into pgjobs.jobs (job_type) values ('t.noop')"
    db.execute(pgjobs_enqueue)  # a batch to run, after which the worker looks at vacuum

    wait_for(lambda: _rescued(db, expired), message="no rescue")
    done = wait_for(lambda: worker.event("prune_done"), message="no prune")
    assert done["pruned"] == len(old)
    assert not db.execute("select id from pgjobs.jobs where id = any(%s)", (old,)).fetchall()

    def vacuumed() -> bool:
        db.execute(pgjobs_enqueue)  # keep batches coming: vacuum is checked after one
        db.execute("select pg_stat_clear_snapshot()")
        row = db.execute(
            "select vacuum_count from pg_stat_user_tables"
            " where relid = 'pgjobs.jobs_active'::regclass"
        ).fetchone()
        return bool(row and row[0] > 0 and worker.event("jobs_vacuumed"))

    wait_for(vacuumed, timeout=20, interval=0.5, message="no vacuum")
    # All along, the stranger held its keys: they were simply not in the way.
    held = stranger.execute(
        "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()"
        " and granted"
    ).fetchone()
    assert held == (3,)


def _holder(conn: psycopg.Connection[Any], duty: str) -> tuple[str | None, Any]:
    row = conn.execute(
        "select holder, expires_at from pgjobs.maintenance_leases where duty = %s", (duty,)
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


@pytest.mark.slow
def test_a_supervisor_killed_9_gives_its_rescue_turn_back_after_its_lease(
    db: psycopg.Connection[Any], start_worker: Callable[..., Worker], wait_for: WaitFor
) -> None:
    first = start_worker()
    wait_for(
        lambda: (_holder(db, "rescue")[0] or "").endswith(f"/{first.pid}"),
        message="the first supervisor never took the rescue turn",
    )
    first.signal_all(signal.SIGKILL)
    first.wait(10)
    holder, expires_at = _holder(db, "rescue")
    assert holder is not None and holder.endswith(f"/{first.pid}")  # nobody released it

    expired = _expired_running_job(db)
    second = start_worker()
    wait_for(lambda: _rescued(db, expired), message="no rescue")
    assert (_holder(db, "rescue")[0] or "").endswith(f"/{second.pid}")
    rescued_at = db.execute(
        "select max(at) from pgjobs.job_events where job_id = %s and to_state = 'retrying'",
        (expired,),
    ).fetchone()
    assert rescued_at is not None and rescued_at[0] >= expires_at  # not before the turn expired


_HOLD = """
import sys, time, psycopg
from pgjobs.statements import maintenance
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    assert maintenance.lease_take(conn, duty="prune", holder="doomed/1", seconds=2)
    print("taken", flush=True)
    time.sleep(600)
"""


def test_a_pruner_killed_9_gives_its_turn_back_after_its_lease(
    dsn: str, db: psycopg.Connection[Any], wait_for: WaitFor
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, dsn], cwd=ROOT, stdout=subprocess.PIPE, env=dict(os.environ)
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"taken"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # Dead, but its turn lives until the lease ends: then the next pruner has it.
    assert maintenance.lease_take(db, duty="prune", holder="next/2", seconds=60) is False
    wait_for(
        lambda: maintenance.lease_take(db, duty="prune", holder="next/2", seconds=60),
        timeout=10,
        message="the dead pruner's turn never expired",
    )
    assert _holder(db, "prune")[0] == "next/2"
    # Renewing is taking again; releasing frees it for anyone at once.
    assert maintenance.lease_take(db, duty="prune", holder="next/2", seconds=60) is True
    maintenance.lease_release(db, duties=["prune"], holder="someone/else")
    assert _holder(db, "prune")[0] == "next/2"  # only the holder can release
    maintenance.lease_release(db, duties=["prune"], holder="next/2")
    assert maintenance.lease_take(db, duty="prune", holder="third/3", seconds=60) is True
