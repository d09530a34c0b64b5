"""Applies the numbered files in sql/migrations/ that a database has not seen.

The whole run holds a session advisory lock, so two ``migrate`` processes
started at once serialize: the second finds everything applied. Each step
commits together with its row in ``pgjobs.schema_migrations``.
"""

from __future__ import annotations

import psycopg
import structlog

from pgjobs import sql

log = structlog.get_logger("pgjobs.migrate")

# pg_advisory_lock key: "pgjobs" in ASCII, so it is recognisable in pg_locks.
_LOCK_KEY = 0x70676A6F6273


def migrate(conn: psycopg.Connection) -> list[str]:
    """Applies missing migrations in order; returns the names applied."""
    if not conn.autocommit:
        raise ValueError("pgjobs.migrate needs an autocommit connection")
    steps = sql.migrations()
    applied: list[str] = []
    conn.execute(sql.query("migration_lock"), {"key": _LOCK_KEY})
    try:
        with conn.transaction():
            conn.execute(steps[0].sql.encode())  # 0000_bootstrap: the ledger, idempotent
        done = _versions(conn)
        for step in steps[1:]:
            if step.version in done:
                continue
            with conn.transaction():
                conn.execute(step.sql.encode())  # bytes: no placeholder parsing
                conn.execute(
                    sql.query("migration_record"), {"version": step.version, "name": step.name}
                )
            applied.append(f"{step.version:04d}_{step.name}")
            log.info("migration_applied", version=step.version, name=step.name)
    finally:
        conn.execute(sql.query("migration_unlock"), {"key": _LOCK_KEY})
    return applied


def _versions(conn: psycopg.Connection) -> set[int]:
    row = conn.execute(sql.query("migration_table_exists")).fetchone()
    if not row or not row[0]:
        return set()
    return {r[0] for r in conn.execute(sql.query("migration_versions"))}


def pending(conn: psycopg.Connection) -> list[str]:
    """Names of migrations not applied yet (all of them on a bare database)."""
    done = _versions(conn)
    return [f"{m.version:04d}_{m.name}" for m in sql.migrations()[1:] if m.version not in done]
