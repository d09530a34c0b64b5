"""The connection every public call is given, whatever holds it: psycopg itself,
a SQLAlchemy ``Connection`` or ``Session``, or Django's connection.

:func:`raw` finds the psycopg 3 connection underneath and lets the owner know a
transaction is under way, so pgjobs' statements run in the caller's transaction
and end with it. Nothing here begins, commits or rolls back on its own account:
both ORMs begin lazily, so the first statement of an ORM transaction may well be
pgjobs', and it must join that transaction rather than run one of its own.

Neither ORM is imported: each is recognised by the modules its classes live in
and driven through the few public attributes named below, so ``import pgjobs``
costs nothing for an application that uses neither.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.pq import Format
from psycopg.types.json import JsonbLoader

_JSONB_OID = psycopg.adapters.types["jsonb"].oid

SUPPORTED = (
    "a psycopg 3 connection, a SQLAlchemy Connection or Session (postgresql+psycopg://), "
    "or Django's connection (psycopg 3 backend)"
)


def raw(conn: object) -> psycopg.Connection[Any]:
    """The psycopg connection under ``conn``, inside the owner's transaction (if any)."""
    if isinstance(conn, psycopg.Connection):
        return conn
    if isinstance(conn, psycopg.AsyncConnection) or _is_async_sqlalchemy(conn):
        raise TypeError(
            f"{type(conn).__qualname__} is asynchronous: use pgjobs.aio "
            f"(await pgjobs.aio.enqueue(...)) with it"
        )
    family = _family(conn)
    if family == "sqlalchemy":
        return _sqlalchemy(conn)
    if family == "django":
        return _django(conn)
    raise TypeError(f"pgjobs needs {SUPPORTED}; got {type(conn).__qualname__}")


ASYNC_SUPPORTED = (
    "a psycopg 3 AsyncConnection (from an AsyncConnectionPool too), or SQLAlchemy's "
    "AsyncConnection or AsyncSession (postgresql+psycopg://)"
)


async def araw(conn: object) -> psycopg.AsyncConnection[Any]:
    """:func:`raw` for ``pgjobs.aio``: the psycopg AsyncConnection under ``conn``,
    inside the owner's transaction (if any), begun as the owner would begin it."""
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    if not _is_async_sqlalchemy(conn):
        hint = " (a blocking one: use pgjobs, not pgjobs.aio)" if _is_blocking(conn) else ""
        raise TypeError(f"pgjobs.aio needs {ASYNC_SUPPORTED}; got {type(conn).__qualname__}{hint}")
    sa: Any = conn
    if hasattr(sa, "sync_session"):
        # An AsyncSession: connection() autobegins the session's transaction,
        # exactly as a query through the ORM would.
        sa = await sa.connection()
    elif not sa.in_transaction():
        await sa.begin()  # as in _sqlalchemy: our statements bypass its execute()
    fairy = await sa.get_raw_connection()
    driver = fairy.driver_connection
    if not isinstance(driver, psycopg.AsyncConnection):
        raise TypeError(
            f"pgjobs.aio needs SQLAlchemy's psycopg 3 async driver (postgresql+psycopg://), "
            f"not {type(driver).__module__}"
        )
    return driver


def _is_async_sqlalchemy(conn: object) -> bool:
    return _family(conn) == "sqlalchemy" and (
        hasattr(conn, "sync_session") or hasattr(conn, "sync_connection")
    )


def _is_blocking(conn: object) -> bool:
    return isinstance(conn, psycopg.Connection) or _family(conn) is not None


def _family(conn: object) -> str | None:
    # The MRO, so an application's own Session subclass is recognised too.
    for klass in type(conn).__mro__:
        top = klass.__module__.partition(".")[0]
        if top in ("sqlalchemy", "django"):
            return top
    return None


def _sqlalchemy(conn: Any) -> psycopg.Connection[Any]:
    if callable(getattr(conn, "connection", None)):
        # A Session (or scoped_session): connection() begins the session's
        # transaction if it has none (autobegin), exactly as a query through the
        # ORM would, and fails if the application turned autobegin off.
        conn = conn.connection()
    elif not conn.in_transaction():
        # A Connection would begin on its first execute() (autobegin); our
        # statements bypass execute(), so begin as it would have. Without this
        # the Connection's commit() would be a no-op and the job would be rolled
        # back when the connection goes back to the pool.
        conn.begin()
    driver = conn.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise TypeError(
            f"pgjobs needs SQLAlchemy's psycopg 3 driver (postgresql+psycopg://), "
            f"not {type(driver).__module__}"
        )
    return driver


def _django(conn: Any) -> psycopg.Connection[Any]:
    # Inside transaction.atomic() Django has turned the driver's autocommit off,
    # so our first statement begins the transaction atomic() will end; outside
    # it the connection autocommits, as every Django query does there.
    conn.ensure_connection()
    validate = getattr(conn, "validate_no_broken_transaction", None)
    if validate is not None:
        validate()  # an atomic block marked for rollback refuses queries, ours too
    driver = conn.connection
    if not isinstance(driver, psycopg.Connection):
        raise TypeError(f"pgjobs needs Django's psycopg 3 backend, not {type(driver).__module__}")
    return driver


def own_types(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> None:
    """Reads jsonb as Python objects on this cursor whatever the connection says.

    Django's connection loads jsonb as text (its JSONField decodes it itself),
    and changing the connection would change Django; a cursor's adapters are its
    own, so pgjobs' results have the same types on every connection.
    """
    if cur.adapters.get_loader(_JSONB_OID, Format.TEXT) is not JsonbLoader:
        cur.adapters.register_loader("jsonb", JsonbLoader)
