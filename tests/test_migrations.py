"""Migrations: an empty database gets all of them, once, whoever runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from pgjobs import migrate as migrate_module
from pgjobs import sql
from pgjobs.migrate import migrate, pending
from pgjobs.statements import migrations

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


def test_two_migrate_processes_at_once_apply_each_migration_once(
    empty_dsn: str, wait_for: Callable[..., object]
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pgjobs.cli", "migrate", "--dsn", empty_dsn]
    with psycopg.connect(empty_dsn, autocommit=True) as holder:
        # Holding the migration lock keeps the first process from finishing
        # before the second has connected: the two really overlap.
        migrations.lock(holder, key=migrate_module._LOCK_KEY)
        procs = [
            subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        try:
            wait_for(
                lambda: (
                    holder.execute(
                        "select count(*) from pg_stat_activity "
                        "where datname = current_database() and pid <> pg_backend_pid()"
                    ).fetchone()
                    == (2,)
                ),
                timeout=30,
                message="both migrate processes connected",
            )
        finally:
            migrations.unlock(holder, key=migrate_module._LOCK_KEY)
        outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, f"stdout: {out}\nstderr: {err}"
    ledger = _ledger(empty_dsn)
    assert sorted(ledger) == sorted(EXPECTED), "each migration recorded exactly once"
    # Exactly one of them did the work; the other found it done.
    reports = sorted(out.strip().splitlines()[-1] for out, _ in outputs)
    assert reports[1] == "up to date", reports
    assert reports[0].startswith("applied: "), reports
