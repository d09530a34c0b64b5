"""Creates or upgrades the pgjobs schema of a database.

A database without pgjobs gets ``sql/schema/`` (the current definition of
every object) and every migration recorded as applied; a database that has
pgjobs gets the files of ``sql/migrations/`` it has not seen, in order. Each
step commits together with its rows in ``pgjobs.schema_migrations``.

Concurrent runs take turns on the ledger table itself: every step's
transaction locks ``pgjobs.schema_migrations`` in EXCLUSIVE mode, then reads
which versions are applied. Taking that lock needs the right to write the
ledger, which no runtime role has (workers and admins may read it, and a read
lock does not conflict), so a role without pgjobs grants cannot hold
``migrate`` up, as it could while migrate took an advisory lock whose key
anyone may lock. A holder that dies releases the lock with its transaction.
"""

from __future__ import annotations

import psycopg
import structlog
from psycopg import errors as pg

from pgjobs import sql
from pgjobs.errors import PgJobsError

log = structlog.get_logger("pgjobs.migrate")

# PostgreSQL 15: UNIQUE NULLS NOT DISTINCT and security_invoker views.
MIN_SERVER_VERSION = 150000

# Creating the ledger races when several runs start on a bare database: the
# loser of CREATE SCHEMA/TABLE IF NOT EXISTS gets a unique violation once the
# winner commits, and finds the ledger there on its next try.
_LEDGER_TRIES = 10


class UnsupportedServer(PgJobsError, ValueError):
    """The server is older than the oldest PostgreSQL pgjobs supports."""


def migrate(conn: psycopg.Connection, *, from_schema: bool = True) -> list[str]:
    """Applies what the database lacks; returns the migration names now applied.

    ``from_schema=False`` builds a bare database by replaying every migration
    instead of installing ``sql/schema/``: what the schema-versus-migrations
    test compares against.
    """
    if not conn.autocommit:
        raise ValueError("pgjobs.migrate needs an autocommit connection")
    require_supported_server(conn)
    _create_ledger(conn)
    done = _versions(conn)
    applied = _install(conn) if from_schema and not done else []
    for step in sql.migrations()[1:]:
        # A version once in the ledger stays there: only the others need the lock.
        if step.version not in done and _apply(conn, step):
            applied.append(_label(step))
    return applied


def pending(conn: psycopg.Connection) -> list[str]:
    """Names of migrations not applied yet (all of them on a bare database)."""
    done = _versions(conn)
    return [_label(m) for m in sql.migrations()[1:] if m.version not in done]


def require_supported_server(conn: psycopg.Connection) -> None:
    row = conn.execute(sql.query("migration_server_version")).fetchone()
    assert row is not None
    check_server_version(int(row[0]))


def check_server_version(version_num: int) -> None:
    """Raises UnsupportedServer for a ``server_version_num`` below the minimum."""
    if version_num < MIN_SERVER_VERSION:
        raise UnsupportedServer(
            f"pgjobs needs PostgreSQL {MIN_SERVER_VERSION // 10000} or later; "
            f"this server is {version_num // 10000}.{version_num % 10000}"
        )


def _label(step: sql.Migration) -> str:
    return f"{step.version:04d}_{step.name}"


def _create_ledger(conn: psycopg.Connection) -> None:
    ledger = sql.schema()[0]  # 00_ledger.sql: idempotent, runs before any lock
    for attempt in range(1, _LEDGER_TRIES + 1):
        try:
            with conn.transaction():
                conn.execute(ledger.sql.encode())  # bytes: no placeholder parsing
            return
        except (pg.UniqueViolation, pg.DuplicateSchema, pg.DuplicateTable):
            if attempt == _LEDGER_TRIES:
                raise


def _install(conn: psycopg.Connection) -> list[str]:
    """A fresh install: every schema file, and every migration recorded."""
    steps = sql.migrations()[1:]
    with conn.transaction():
        conn.execute(sql.query("migration_ledger_lock"))
        if _versions(conn):  # another run installed or migrated meanwhile
            return []
        for part in sql.schema()[1:]:
            conn.execute(part.sql.encode())
        for step in steps:
            _record(conn, step)
    log.info("schema_installed", versions=len(steps))
    return [_label(step) for step in steps]


def _apply(conn: psycopg.Connection, step: sql.Migration) -> bool:
    """Applies one migration unless the ledger has it; says whether it did."""
    with conn.transaction():
        conn.execute(sql.query("migration_ledger_lock"))
        if step.version in _versions(conn):
            return False
        conn.execute(step.sql.encode())
        _record(conn, step)
    log.info("migration_applied", version=step.version, name=step.name)
    return True


def _record(conn: psycopg.Connection, step: sql.Migration) -> None:
    conn.execute(sql.query("migration_record"), {"version": step.version, "name": step.name})


def _versions(conn: psycopg.Connection) -> set[int]:
    row = conn.execute(sql.query("migration_table_exists")).fetchone()
    if not row or not row[0]:
        return set()
    return {r[0] for r in conn.execute(sql.query("migration_versions"))}
