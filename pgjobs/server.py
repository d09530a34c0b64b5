"""``pgjobs server status|stop|url``: the embedded PostgreSQL, seen and controlled.

With no ``--dsn`` and no ``PGJOBS_DSN``, every command starts (or reuses) one
embedded server under ``PGJOBS_HOME`` (see :func:`pgjobs.db.default_home`) and
leaves it running for the next command. These verbs show where it lives, stop
it, and print a URL that ``psql`` (or any libpq client) connects with.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from psycopg.conninfo import conninfo_to_dict

from pgjobs import db

Echo = Callable[[Any], None]

# `server status` exit code when no embedded server runs, so a script can test it.
NOT_RUNNING = 1


def url(dsn: str | None = None, database: str | None = None) -> str:
    """The server every pgjobs command would use (``--dsn``, ``PGJOBS_DSN``, else
    the embedded one, started if need be) as a ``postgresql://`` URL."""
    resolved = db.resolve_dsn(dsn)
    if database is not None:
        resolved = db.with_dbname(resolved, database)
    return to_url(resolved)


def to_url(dsn: str) -> str:
    """A keyword DSN (or URL) as a ``postgresql://`` URL; a unix-socket host, which
    a URL cannot hold in its authority part, goes in the ``host`` parameter."""
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    host = params.pop("host", "")
    port = params.pop("port", "")
    user = params.pop("user", "")
    password = params.pop("password", "")
    dbname = params.pop("dbname", "")
    if host.startswith("/"):
        params = {"host": host, **({"port": port} if port else {}), **params}
        netloc = ""
    else:
        netloc = quote(host, safe="") + (f":{port}" if port else "")
    if user:
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        netloc = f"{auth}@{netloc}"
    # libpq decodes %XX but not "+", so spaces must be %20.
    query = f"?{urlencode(params, quote_via=quote)}" if params else ""
    return f"postgresql://{netloc}/{quote(dbname, safe='')}{query}"


def status(echo: Echo) -> int:
    """Prints the embedded server's state; exit 0 if it runs, 1 if not."""
    pgdata = db.embedded_pgdata()
    info = db.embedded_info()
    echo(f"data directory: {pgdata}")
    if os.environ.get(db.DSN_ENV):
        echo(f"note: {db.DSN_ENV} is set, so commands use that server, not this one")
    if info is None:
        echo("state: not running (any pgjobs command without a DSN starts it)")
        return NOT_RUNNING
    echo("state: running")
    echo(f"pid: {info.pid}")
    echo(f"url: {to_url(db.dsn_for_info(info))}")
    return 0


def stop(echo: Echo) -> int:
    """Stops the embedded server; a server that is not running is not an error."""
    pgdata = db.embedded_pgdata()
    if db.stop_embedded():
        echo(f"stopped the embedded server on {pgdata}")
    else:
        echo(f"not running (data directory: {pgdata})")
    return 0
