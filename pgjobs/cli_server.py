"""The ``register`` and ``server`` commands: click parses, pgjobs.startup and
pgjobs.server do the work. Attached to the main group by :func:`attach`, so
this module needs nothing from cli.py at import time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pgjobs import commands
from pgjobs import server as server_mod

Run = Callable[[Callable[[], int | None]], None]
Decorator = Callable[[Any], Any]


def attach(main: click.Group, run: Run, dsn_option: Decorator) -> None:
    """Adds ``register`` and ``server status|stop|url`` to ``main``."""

    @main.command()
    @dsn_option
    @click.option(
        "--import",
        "imports",
        multiple=True,
        metavar="MODULE",
        help="Module whose @pgjobs.job handlers define the types (repeatable; "
        "found from the current directory).",
    )
    def register(dsn: str | None, imports: tuple[str, ...]) -> None:
        """Write job types to the database without running a worker.

        Imports each module, then creates or updates a row in pgjobs.job_types
        for every @pgjobs.job it declares, so that `pgjobs enqueue` and your
        application can enqueue those types before any worker has started.
        """
        run(lambda: commands.register(dsn, imports, click.echo))

    @main.group()
    def server() -> None:
        """Show, stop or connect to the embedded PostgreSQL.

        With no --dsn and no PGJOBS_DSN, pgjobs runs one PostgreSQL of its own per
        user, under PGJOBS_HOME (default ~/.local/share/pgjobs; /var/lib/pgjobs
        for root), started by the first command that needs it and left running.
        """

    @server.command()
    def status() -> None:
        """Say whether the embedded server runs, and where.

        Prints its data directory and, when it runs, its pid and URL; exits 1
        when it does not run.
        """
        run(lambda: server_mod.status(click.echo))

    @server.command()
    def stop() -> None:
        """Stop the embedded server.

        Its data stays; the next command that needs it starts it again.
        """
        run(lambda: server_mod.stop(click.echo))

    @server.command()
    @dsn_option
    @click.option(
        "--database",
        default=None,
        help="Database to name in the URL (default: the one pgjobs uses).",
    )
    def url(dsn: str | None, database: str | None) -> None:
        """Print the URL of the database pgjobs uses, for psql.

        That is --dsn or PGJOBS_DSN when given, else the embedded server's, which
        is started if it is not running.
        """
        run(lambda: click.echo(server_mod.url(dsn, database)))
