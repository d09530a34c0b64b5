"""Tenant scope: the organization whose rows row-level security lets a session see.

The scope is set transaction-locally (``set_config(..., true)``), so it ends
with the transaction and a pooled connection never carries it into other work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from pgjobs import _conn, sql
from pgjobs.errors import InvalidJob
from pgjobs.payload import check_text


def set_organization(conn: psycopg.Connection[Any], organization: str | None) -> None:
    """Scopes the current transaction to ``organization`` (None clears it)."""
    check_text("organization", organization)
    conn.execute(sql.query("tenant_set"), {"organization": organization or ""})


def set_actor(conn: psycopg.Connection[Any], actor: str | None) -> None:
    """Names who acts in the current transaction (``pgjobs.actor``; None clears it).

    Jobs record it in ``created_by``, history rows in ``actor``, and a job type
    whose ``cancel_policy`` is 'creator' lets only that actor (or an admin) cancel.
    """
    check_text("actor", actor)
    conn.execute(sql.query("actor_set"), {"actor": actor or ""})


def current_organization(conn: psycopg.Connection[Any]) -> str | None:
    """The organization the current transaction is scoped to, if any."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(sql.query("tenant_get")).fetchone()
    return None if row is None else row[0]


@contextlib.contextmanager
def tenant(conn: Any, organization: str, *, actor: str | None = None) -> Iterator[Any]:
    """Scopes the caller's transaction to one organization for the block, acting
    as ``actor`` when given (see :func:`set_actor`).

    Joins the transaction ``conn`` is in (or begins, as its first statement, the
    one psycopg or the ORM begins implicitly) and leaves its end to the caller:
    nothing is committed here. When the block ends, the scope goes back to what
    it was before, so blocks nest (a handler's ``tenant(ctx.conn, ...)`` keeps
    its job's scope afterwards). An autocommit connection has no transaction to
    scope: InvalidJob, rather than a scope that would end with its own statement.
    Yields ``conn`` as given.
    """
    if not isinstance(organization, str) or not organization:
        raise InvalidJob("organization must be a non-empty string")
    check_text("organization", organization)
    check_text("actor", actor)
    pg = _conn.raw(conn)
    # An autocommit connection inside conn.transaction() has a transaction to join.
    if pg.autocommit and pg.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        raise InvalidJob(
            "pgjobs.tenant needs a transaction to scope, and this connection autocommits: "
            "open one first (psycopg: `with conn.transaction():`, Django: "
            "`with transaction.atomic():`)"
        )
    with pg.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            sql.query("tenant_enter"), {"organization": organization, "actor": actor}
        ).fetchone()
    assert row is not None
    previous, previous_actor, began = row[0], row[1], row[2]
    try:
        yield conn
    finally:
        # In a failed transaction nothing can run, and the rollback the caller
        # owes undoes the scope anyway; after a commit inside the block, the
        # scope ended with that transaction.
        if not pg.broken and pg.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
            pg.execute(
                sql.query("tenant_restore"),
                {"previous": previous, "previous_actor": previous_actor, "began": began},
            )
