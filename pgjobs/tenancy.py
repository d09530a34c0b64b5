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


def current_organization(conn: psycopg.Connection[Any]) -> str | None:
    """The organization the current transaction is scoped to, if any."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(sql.query("tenant_get")).fetchone()
    return None if row is None else row[0]


@contextlib.contextmanager
def tenant(conn: psycopg.Connection[Any], organization: str) -> Iterator[psycopg.Connection[Any]]:
    """Runs the block in a transaction scoped to one organization.

    Opens a transaction (or a savepoint inside the caller's); the scope is
    transaction-local, and is cleared again when the block ends.
    """
    if not organization:
        raise InvalidJob("organization must be a non-empty string")
    raw = _conn.raw(conn)
    with raw.transaction():
        set_organization(raw, organization)
        try:
            yield conn
        finally:
            if (
                not raw.broken
                and raw.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            ):
                set_organization(raw, None)
