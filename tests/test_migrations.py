"""Migrations: an empty database gets all of them, once, whoever runs them."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from pgjobs import sql
from pgjobs.migrate import UnsupportedServer, check_server_version, migrate, pending

ROOT = Path(__file__).resolve().parent.parent

# 0000_bootstrap creates the ledger itself and is not recorded in it.
EXPECTED = {(m.version, m.name) for m in sql.migrations()[1:]}


def _ledger(dsn: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select version, name from pgjobs.schema_migrations order by version"
        ).fetchall()
    return [(int(v), str(n)) for v, n in rows]


def test_empty_database_gets_every_migration_recorded(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute("select to_regnamespace('pgjobs')").fetchone() == (None,)
        applied = migrate(conn)
        assert pending(conn) == []
        # The schema works: a job type and a job can be written.
        conn.execute(
            "insert into pgjobs.job_types (name, handler) "
            "values ('m', 'tests.support.handlers:noop')"
        )
        job_id = conn.execute("select pgjobs.enqueue('m')").fetchone()
    assert applied == [f"{v:04d}_{n}" for v, n in sorted(EXPECTED)]
    assert set(_ledger(empty_dsn)) == EXPECTED
    assert len(_ledger(empty_dsn)) == len(EXPECTED)
    assert job_id is not None and job_id[0] is not None


def test_migrate_again_applies_nothing(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert migrate(conn)
        before = conn.execute(
            "select version, applied_at from pgjobs.schema_migrations order by version"
        ).fetchall()
        assert migrate(conn) == []
        after = conn.execute(
            "select version, applied_at from pgjobs.schema_migrations order by version"
        ).fetchall()
    assert after == before


def test_migrate_refuses_a_connection_inside_a_transaction(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn) as conn, pytest.raises(ValueError):
        migrate(conn)


def _waiting_on_locks(dsn: str, n: int) -> bool:
    # Its own session: within a transaction pg_stat_activity keeps its first reading.
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity"
            " where datname = current_database() and wait_event_type = 'Lock'"
        ).fetchone()
    return row == (n,)


# What holds every migrate process at its first step until all have connected.
# An uncommitted CREATE SCHEMA pgjobs, rolled back, leaves the database bare,
# so they race from the very beginning.
_HOLD_A_BARE_DATABASE = "create schema pgjobs"
_HOLD_THE_LEDGER = "lock table pgjobs.schema_migrations in exclusive mode"


def _migrate_at_once(
    dsn: str, n: int, wait_for: Callable[..., object], hold: str = _HOLD_A_BARE_DATABASE
) -> list[str]:
    """Runs ``pgjobs migrate`` in n processes that really overlap; returns the
    last line each printed, sorted, after checking each exited 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pgjobs.cli", "migrate", "--dsn", dsn]
    with psycopg.connect(dsn) as holder:
        holder.execute(hold)  # type: ignore[arg-type]
        procs = [
            subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(n)
        ]
        try:
            wait_for(
                lambda: _waiting_on_locks(dsn, n),
                timeout=60,
                message=f"all {n} migrate processes waiting",
            )
        finally:
            holder.rollback()
        outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, f"stdout: {out}\nstderr: {err}"
    return sorted(out.strip().splitlines()[-1] for out, _ in outputs)


def test_two_migrate_processes_at_once_apply_each_migration_once(
    empty_dsn: str, wait_for: Callable[..., object]
) -> None:
    reports = _migrate_at_once(empty_dsn, 2, wait_for)
    ledger = _ledger(empty_dsn)
    assert sorted(ledger) == sorted(EXPECTED), "each migration recorded exactly once"
    # Exactly one of them did the work; the other found it done.
    assert reports[1] == "up to date", reports
    assert reports[0].startswith("applied: "), reports


@pytest.mark.slow
def test_five_migrate_processes_on_a_bare_database_install_once(
    empty_dsn: str, wait_for: Callable[..., object]
) -> None:
    reports = _migrate_at_once(empty_dsn, 5, wait_for)
    assert _ledger(empty_dsn) == sorted(EXPECTED)
    assert reports[0] == "applied: " + ", ".join(f"{v:04d}_{n}" for v, n in sorted(EXPECTED))
    assert reports[1:] == ["up to date"] * 4, reports


def _migrated_by_the_previous_release(dsn: str) -> sql.Migration:
    """Applies every migration but the last, as the release before it did;
    returns the last one."""
    *earlier, last = sql.migrations()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for step in earlier:
            with conn.transaction():
                conn.execute(step.sql.encode())
                if step.version > 0:  # 0000_bootstrap is the ledger itself
                    conn.execute(
                        sql.query("migration_record"), {"version": step.version, "name": step.name}
                    )
    return last


@pytest.mark.slow
def test_five_migrate_processes_apply_a_missing_migration_once(
    empty_dsn: str, wait_for: Callable[..., object]
) -> None:
    last = _migrated_by_the_previous_release(empty_dsn)
    reports = _migrate_at_once(empty_dsn, 5, wait_for, hold=_HOLD_THE_LEDGER)
    assert reports == [f"applied: {last.version:04d}_{last.name}"] + ["up to date"] * 4
    assert _ledger(empty_dsn) == sorted(EXPECTED)


# The advisory lock key migrate took before it locked the ledger instead.
_OLD_MIGRATE_LOCK_KEY = 0x70676A6F6273


@pytest.fixture
def stranger(server_dsn: str) -> Iterator[str]:
    """A role with no pgjobs grants at all."""
    name = f"pgjobs_test_stranger_{secrets.token_hex(4)}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f"create role {name} nologin")
    try:
        yield name
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(f"drop role if exists {name}")


def _migrate_within_a_minute(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("set statement_timeout = '60s'")  # a hang fails the test, not the run
        return migrate(conn)


@pytest.mark.slow
def test_a_role_without_grants_cannot_hold_up_a_fresh_install(
    empty_dsn: str, stranger: str
) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(f"set role {stranger}")
        locked = conn.execute("select pg_try_advisory_lock(%s)", [_OLD_MIGRATE_LOCK_KEY])
        assert locked.fetchone() == (True,)
        assert _migrate_within_a_minute(empty_dsn) == [f"{v:04d}_{n}" for v, n in sorted(EXPECTED)]
        # The ledger exists now, and the stranger cannot lock it.
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("lock table pgjobs.schema_migrations in exclusive mode")
    assert _ledger(empty_dsn) == sorted(EXPECTED)


@pytest.mark.slow
def test_no_runtime_role_or_stranger_can_hold_up_an_upgrade(empty_dsn: str, stranger: str) -> None:
    last = _migrated_by_the_previous_release(empty_dsn)
    with (
        psycopg.connect(empty_dsn, autocommit=True) as outsider,
        psycopg.connect(empty_dsn, autocommit=True) as worker,
    ):
        outsider.execute(f"set role {stranger}")
        locked = outsider.execute("select pg_try_advisory_lock(%s)", [_OLD_MIGRATE_LOCK_KEY])
        assert locked.fetchone() == (True,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege), outsider.transaction():
            outsider.execute("lock table pgjobs.schema_migrations in exclusive mode")
        # A worker may read the ledger but not lock it against writers, and the
        # read lock it holds in an open transaction does not stop migrate.
        worker.execute("set role pgjobs_worker")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), worker.transaction():
            worker.execute("lock table pgjobs.schema_migrations in exclusive mode")
        with worker.transaction():
            worker.execute("select count(*) from pgjobs.schema_migrations")
            assert _migrate_within_a_minute(empty_dsn) == [f"{last.version:04d}_{last.name}"]
    assert _ledger(empty_dsn) == sorted(EXPECTED)


def test_migrate_refuses_a_server_older_than_postgresql_15() -> None:
    with pytest.raises(UnsupportedServer, match=r"PostgreSQL 15 or later; this server is 14\.11"):
        check_server_version(140011)
    check_server_version(150000)
    check_server_version(160004)


def test_migrate_says_an_old_server_in_one_line_exit_2(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from pgjobs import cli

    def as_if_postgresql_13(conn: psycopg.Connection) -> None:
        check_server_version(130000)

    monkeypatch.setattr("pgjobs.migrate.require_supported_server", as_if_postgresql_13)
    result = CliRunner().invoke(cli.main, ["migrate", "--dsn", empty_dsn])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: pgjobs needs PostgreSQL 15 or later; this server is 13.0"
    )
    with psycopg.connect(empty_dsn) as conn:  # nothing was written
        assert conn.execute("select to_regnamespace('pgjobs')").fetchone() == (None,)
