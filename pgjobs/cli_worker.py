"""The ``worker`` command's options: click parses, pgjobs.commands.worker does
the work. Attached to the main group by :func:`attach` (its many options would
crowd cli.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pgjobs import commands

Run = Callable[[Callable[[], int | None]], None]
Decorator = Callable[[Any], Any]


def attach(main: click.Group, run: Run, dsn_option: Decorator) -> None:
    """Adds ``worker`` to ``main``."""

    @main.command()
    @dsn_option
    @click.option(
        "--processes",
        "-p",
        default=2,
        show_default=True,
        type=click.IntRange(1, 256),
        help="Worker processes, each running one job at a time.",
    )
    @click.option(
        "--queues",
        "-q",
        default="default",
        show_default=True,
        help="Comma-separated queues to serve.",
    )
    @click.option(
        "--import",
        "imports",
        multiple=True,
        metavar="MODULE",
        help="Module that registers handlers with @pgjobs.job (repeatable; "
        "found from the current directory).",
    )
    @click.option(
        "--batch-size",
        default=100,
        show_default=True,
        type=click.IntRange(1, 10_000),
        help="Most jobs one claim takes at a time.",
    )
    @click.option(
        "--concurrency",
        "-c",
        default=1,
        show_default=True,
        type=click.IntRange(1, 10_000),
        help="Async handlers in flight per process, on its one event loop "
        "(sync handlers run one at a time).",
    )
    @click.option(
        "--lease",
        "lease_seconds",
        default=30.0,
        show_default=True,
        type=float,
        help="Seconds a claim stays valid without a heartbeat.",
    )
    @click.option(
        "--grace",
        "grace_seconds",
        default=30.0,
        show_default=True,
        type=float,
        help="On SIGTERM, seconds running jobs may take to finish.",
    )
    @click.option(
        "--cancel-grace",
        "cancel_grace_seconds",
        default=5.0,
        show_default=True,
        type=float,
        help="Seconds a canceled running job has to return before it is killed.",
    )
    @click.option(
        "--poll",
        "poll_seconds",
        default=None,
        type=float,
        help="Seconds between polls when no NOTIFY arrives (default 5; 1 behind a pooler).",
    )
    @click.option("--no-listen", is_flag=True, help="Poll only, no LISTEN for wake-ups.")
    @click.option(
        "--pooler/--direct",
        default=None,
        help="Through PgBouncer in transaction mode, or not "
        "(default: $PGJOBS_POOLER, else detected).",
    )
    @click.option("--exit-when-idle", is_flag=True, help="Stop once no job is left to run.")
    @click.option(
        "--wait-for-database",
        type=float,
        default=None,
        metavar="SECONDS",
        help="At start, wait this long for the database to answer, then give up "
        "(default: for ever; 30 with --exit-when-idle).",
    )
    @click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        default=None,
        help="Serve Prometheus metrics on this port (0: any free port, logged at start).",
    )
    @click.option(
        "--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port."
    )
    @click.option(
        "--prune-after",
        default=None,
        help="Delete finished jobs older than this (e.g. 30d), at start and daily.",
    )
    @click.option(
        "--log-level",
        default="info",
        show_default=True,
        type=click.Choice(["debug", "info", "warning", "error"]),
        help="Least severe log events written (debug adds job_completed).",
    )
    def worker(
        dsn: str | None,
        processes: int,
        queues: str,
        imports: tuple[str, ...],
        batch_size: int,
        concurrency: int,
        lease_seconds: float,
        grace_seconds: float,
        cancel_grace_seconds: float,
        poll_seconds: float | None,
        no_listen: bool,
        pooler: bool | None,
        exit_when_idle: bool,
        wait_for_database: float | None,
        metrics_port: int | None,
        metrics_host: str,
        prune_after: str | None,
        log_level: str,
    ) -> None:
        """Run jobs: a supervisor and N worker processes.

        Imports the --import modules (from the current directory first), waits
        for the database, writes their job types and runs their jobs until
        SIGTERM (or, with --exit-when-idle, until nothing is left to run).
        """
        run(
            lambda: commands.worker(
                dsn,
                processes=processes,
                queues=queues,
                imports=imports,
                batch_size=batch_size,
                concurrency=concurrency,
                lease_seconds=lease_seconds,
                grace_seconds=grace_seconds,
                cancel_grace_seconds=cancel_grace_seconds,
                poll_seconds=poll_seconds,
                listen=not no_listen,
                pooler=pooler,
                exit_when_idle=exit_when_idle,
                wait_for_database=wait_for_database,
                metrics_port=metrics_port,
                metrics_host=metrics_host,
                prune_after=prune_after,
                log_level=log_level,
            )
        )
