"""Transaction-mode poolers (PgBouncer): how pgjobs talks through one.

Behind a pooler in transaction mode, each transaction may run on another
server connection, and a server connection goes from one client to the next
with whatever the last one left on it. So in pooler mode pgjobs keeps nothing
in the session:

- no prepared statements: psycopg's automatic ones (``_pg3_0``) exist on one
  server connection and are missing, or someone else's, on the next;
- no session settings: every transaction pgjobs runs on its own connections
  sets what the session would have (``statement_timeout``,
  ``idle_in_transaction_session_timeout``, ``synchronous_commit``, ``jit``,
  ``application_name``) with ``set_config(..., true)``, in the same round trip
  as its first statement, and they end with it;
- no session advisory locks (maintenance turns are rows, see
  ``pgjobs.maintenance_leases``), no LISTEN (the worker polls), and no
  ``pg_terminate_backend`` of a process id the pooler made up.

The mode is ``pgjobs worker --pooler``, ``PGJOBS_POOLER=1`` (``0``: never),
or, by default, detected: a pooler answers the connection with a process id
of its own (PgBouncer's is random) that is not the ``pg_backend_pid()`` of the
server running the statements.

Statements pgjobs runs on an application's connection (``pgjobs.enqueue``
...) are never prepared behind a pooler either, whatever the connection's
``prepare_threshold``: detected once per connection, the same way.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from pgjobs import sql

ENV = "PGJOBS_POOLER"

_DETECTED: weakref.WeakKeyDictionary[psycopg.Connection[Any], bool] = weakref.WeakKeyDictionary()


class NeedsDirectConnection(ValueError):
    """What pgjobs cannot do through a transaction-mode pooler (LISTEN)."""


def mode_from_env() -> bool | None:
    """``PGJOBS_POOLER``: True (1), False (0), or None (unset or ``auto``: detect)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{ENV} must be 1, 0 or auto, not {value!r}")


def behind_pooler(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn`` reaches the server through a pooler: the process id
    announced at connection (BackendKeyData) is not the server process that
    runs our statements. One round trip; never prepared."""
    # The plain cursor (no pooler prologue, no recursion), reading plain tuples
    # whatever row factory the application gave its connection.
    cur = psycopg.Cursor(conn, row_factory=tuple_row)
    row = cur.execute(sql.query("session_backend_pid"), prepare=False).fetchone()
    return row is None or int(row[0]) != conn.info.backend_pid


def pooled(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn`` goes through a pooler: pgjobs' own pooled sessions, the
    environment's answer, else detected once per connection and remembered."""
    if isinstance(conn, PooledConnection):
        return True
    forced = mode_from_env()
    if forced is not None:
        return forced
    found = _DETECTED.get(conn)
    if found is None:
        found = _DETECTED[conn] = behind_pooler(conn)
    return found


def remember(conn: psycopg.Connection[Any], is_pooled: bool) -> None:
    """Records what pgjobs knows of a connection it opened (spares the probe)."""
    _DETECTED[conn] = is_pooled


def prepare_flag(conn: psycopg.Connection[Any]) -> bool | None:
    """psycopg's ``prepare`` for a pgjobs statement on ``conn``: False (never
    prepare) behind a pooler, None (psycopg decides) otherwise."""
    if conn.prepare_threshold is None:
        return None  # nothing is ever prepared on it: no need to ask
    return False if pooled(conn) else None


def refuse_listen(conn: psycopg.Connection[Any], what: str) -> None:
    """Raises :class:`NeedsDirectConnection` when ``conn`` is pooled."""
    if pooled(conn):
        raise NeedsDirectConnection(
            f"{what} needs LISTEN, which a transaction-mode pooler (PgBouncer) cannot "
            f"carry: give it a direct connection to PostgreSQL (--dsn to the server's "
            f"own port), or set {ENV}=0 if this is not a pooler"
        )


class PooledCursor(psycopg.Cursor[Any]):
    """A cursor of a :class:`PooledConnection`: each statement carries the
    session's settings into its transaction (see the module docstring)."""

    def execute(
        self,
        query: Any,
        params: Any = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> PooledCursor:
        conn = self.connection
        settings = getattr(conn, "pgjobs_settings", None)
        if not settings or getattr(conn, "pgjobs_bare", False):
            super().execute(query, params, prepare=False, binary=binary)
            return self
        # One pipeline, so one round trip and one Sync: the settings and the
        # statement reach the same server connection, in the same transaction.
        with conn.pipeline():
            if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
                with conn.transaction():
                    _configure(conn, settings)
                    super().execute(query, params, prepare=False, binary=binary)
            else:
                _configure(conn, settings)
                super().execute(query, params, prepare=False, binary=binary)
        return self


def _configure(conn: psycopg.Connection[Any], settings: Mapping[str, Any]) -> None:
    psycopg.Cursor(conn).execute(sql.query("transaction_configure"), settings, prepare=False)


class PooledConnection(psycopg.Connection[Any]):
    """A pgjobs session behind a pooler: nothing prepared, settings per transaction."""

    pgjobs_settings: Mapping[str, Any] | None = None
    pgjobs_bare: bool = False


def connect(
    dsn: str, *, settings: Mapping[str, Any] | None = None, **kwargs: Any
) -> PooledConnection:
    """A session for pooler mode; ``settings`` (the parameters of
    ``transaction_configure``) go with every transaction it runs."""
    conn = PooledConnection.connect(
        dsn, prepare_threshold=None, cursor_factory=PooledCursor, **kwargs
    )
    conn.pgjobs_settings = settings
    return conn


@contextlib.contextmanager
def bare(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Statements without the settings' transaction: for what cannot run in a
    transaction block (VACUUM). They run under the server's defaults."""
    if not isinstance(conn, PooledConnection):
        yield
        return
    conn.pgjobs_bare = True
    try:
        yield
    finally:
        conn.pgjobs_bare = False
