"""Tenant scope: the organization whose rows row-level security lets a session see.

The scope is set transaction-locally (``set_config(..., true)``), so it ends
with the transaction and a pooled connection never carries it into other work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg

from pgjobs import _conn
from pgjobs.errors import InvalidJob
from pgjobs.payload import check_text
from pgjobs.statements import tenancy as statements


def set_organization(conn: psycopg.Connection[Any], organization: str | None) -> None:
    """Scopes the current transaction to ``organization`` (None clears it)."""
    check_text("organization", organization)
    statements.tenant_set(conn, organization=organization)


def set_actor(conn: psycopg.Connection[Any], actor: str | None) -> None:
    """Names who acts in the current transaction (``pgjobs.actor``; None clears it).

    Jobs record it in ``created_by``, history rows in ``actor``, and a job type
    whose ``cancel_policy`` is 'creator' lets only that actor (or an admin) cancel.
    """
    check_text("actor", actor)
    statements.actor_set(conn, actor=actor)


def current_organization(conn: psycopg.Connection[Any]) -> str | None:
    """The organization the current transaction is scoped to, if any."""
    organization: str | None = statements.tenant_get(conn)
    return organization


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
    pg = _conn.raw(conn)
    entered = statements.tenant_enter(pg, **entering(pg, organization, actor))
    try:
        yield conn
    finally:
        if still_scoped(pg):
            statements.tenant_restore(pg, entered)


Connection = psycopg.Connection[Any] | psycopg.AsyncConnection[Any]


def entering(pg: Connection, organization: str, actor: str | None) -> dict[str, Any]:
    """Checks a tenant block's arguments and connection, for both faces of
    ``tenant``; the arguments of ``tenant_enter``."""
    if not isinstance(organization, str) or not organization:
        raise InvalidJob("organization must be a non-empty string")
    check_text("organization", organization)
    check_text("actor", actor)
    # An autocommit connection inside conn.transaction() has a transaction to join.
    if pg.autocommit and pg.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        raise InvalidJob(
            "pgjobs.tenant needs a transaction to scope, and this connection autocommits: "
            "open one first (psycopg: `with conn.transaction():`, Django: "
            "`with transaction.atomic():`)"
        )
    return {"organization": organization, "actor": actor}


def still_scoped(pg: Connection) -> bool:
    """Whether the block's end has a scope to restore.

    In a failed transaction nothing can run, and the rollback the caller owes
    undoes the scope anyway; after a commit inside the block, the scope ended
    with that transaction."""
    return not pg.broken and pg.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
