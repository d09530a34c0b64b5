"""What a newcomer meets first, said in one line rather than a traceback.

The CLI hands every database error it does not otherwise expect to
:func:`explain`, and the commands that run for a long time (``worker``,
``listen``) check up front, through :func:`require_schema` and
:func:`wait_for_database`, what would otherwise fail later or never.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import structlog
from psycopg import errors as pg
from psycopg.conninfo import conninfo_to_dict

from pgjobs import sql
from pgjobs.errors import PgJobsError

log = structlog.get_logger("pgjobs.diagnose")

MIGRATE_HINT = "run `pgjobs migrate` (with the same --dsn / PGJOBS_DSN) to create it"


class SetupError(PgJobsError):
    """The database, the DSN or the imports are not ready for this command."""


def explain(exc: BaseException, dsn: str | None = None) -> str | None:
    """One line that says what went wrong and what to do about it, for the
    errors a setup (not a bug) causes; None for any other, whose traceback helps."""
    where = f" at {describe(dsn)}" if dsn else ""
    if isinstance(exc, psycopg.ProgrammingError) and _is_conninfo_error(exc):
        return (
            f"not a valid PostgreSQL connection string: {str(exc).strip()}. Use keywords "
            "(host=127.0.0.1 user=app dbname=app) or a URL (postgresql://app@127.0.0.1/app)"
        )
    if isinstance(exc, pg.UndefinedTable | pg.UndefinedFunction | pg.InvalidSchemaName) and (
        "pgjobs" in str(exc)
    ):
        return f"the database{where} has no pgjobs schema (or an older one): {MIGRATE_HINT}"
    if isinstance(exc, psycopg.OperationalError):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"cannot connect to PostgreSQL{where}: {first}"
    return None


def _is_conninfo_error(exc: psycopg.ProgrammingError) -> bool:
    # libpq's own words for a string it cannot parse; psycopg raises them as a
    # plain ProgrammingError with no SQLSTATE.
    text = str(exc)
    return exc.sqlstate is None and (
        "connection info string" in text or "invalid dsn" in text or "URI" in text
    )


def describe(dsn: str | None) -> str:
    """Where a DSN points, without its password: ``host:port/dbname``."""
    if not dsn:
        return "the embedded server"
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "an unparsable DSN"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"


def require_schema(conn: psycopg.Connection[Any], dsn: str | None = None) -> None:
    """Refuses to go on against a database that ``pgjobs migrate`` never saw."""
    row = conn.execute(sql.query("schema_installed")).fetchone()
    if row is None or not row[0]:
        where = f" at {describe(dsn)}" if dsn else ""
        raise SetupError(f"the database{where} has no pgjobs schema: {MIGRATE_HINT}")


def wait_for_database(
    dsn: str,
    *,
    timeout: float | None,
    sleep: Callable[[float], None] = time.sleep,
    max_delay: float = 5.0,
) -> None:
    """Connects (and checks the schema) until it works, saying what it waits for;
    gives up with :class:`SetupError` after ``timeout`` seconds (None: never).

    A worker started before its database (a compose file, a reboot) waits for
    it; one started with ``--exit-when-idle`` (a batch, a test) must not hang.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=max(2, int(max_delay))) as conn:
                require_schema(conn, dsn)
            return
        except psycopg.OperationalError as exc:
            reason = explain(exc, dsn) or str(exc)
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SetupError(f"gave up waiting for the database after {timeout:g}s: {reason}")
            delay = min(delay, remaining)
        log.warning("waiting_for_database", database=describe(dsn), error=reason, retry_in=delay)
        sleep(delay)
        delay = min(delay * 2, max_delay)
