"""The ``pgjobs`` command line. Click parses; pgjobs.commands does the work.

Exit codes: 0 ok, 1 a job-level failure (e.g. cancel of a finished job, a watched
job that died), 2 a usage or input error.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from pgjobs import commands
from pgjobs import log as pgjobs_log
from pgjobs.cli_exit import OneLineErrors
from pgjobs.cli_exit import run as _run
from pgjobs.schedules import cli as schedule_commands

F = TypeVar("F", bound=Callable[..., Any])


def _dsn_option(fn: F) -> F:
    return click.option(
        "--dsn",
        envvar="PGJOBS_DSN",
        default=None,
        help="PostgreSQL connection string (default: $PGJOBS_DSN, else an embedded server).",
    )(fn)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, default=str, ensure_ascii=False))


@click.group(cls=OneLineErrors)
@click.version_option(package_name="pgjobs")
def main() -> None:
    """pgjobs: background jobs that live in PostgreSQL."""
    # Logs go to stderr from the first command on: stdout carries only what a
    # command prints (ids, JSON lines, tables), so scripts can parse it.
    pgjobs_log.configure()


@main.command()
@_dsn_option
def migrate(dsn: str | None) -> None:
    """Create or upgrade the pgjobs schema (idempotent)."""
    _run(lambda: commands.migrate(dsn, click.echo))


@main.command()
@_dsn_option
@click.option("--processes", "-p", default=2, show_default=True, type=click.IntRange(1, 256))
@click.option(
    "--queues", "-q", default="default", show_default=True, help="Comma-separated queues to serve."
)
@click.option(
    "--import",
    "imports",
    multiple=True,
    help="Module that registers handlers with @pgjobs.job (repeatable).",
)
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1, 10_000))
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
    default=5.0,
    show_default=True,
    type=float,
    help="Seconds between polls when no NOTIFY arrives (the safety net).",
)
@click.option("--no-listen", is_flag=True, help="Poll only (e.g. behind PgBouncer).")
@click.option("--exit-when-idle", is_flag=True, help="Stop once no job is left to run.")
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
)
def worker(
    dsn: str | None,
    processes: int,
    queues: str,
    imports: tuple[str, ...],
    batch_size: int,
    lease_seconds: float,
    grace_seconds: float,
    cancel_grace_seconds: float,
    poll_seconds: float,
    no_listen: bool,
    exit_when_idle: bool,
    metrics_port: int | None,
    metrics_host: str,
    prune_after: str | None,
    log_level: str,
) -> None:
    """Run a supervisor and N worker processes."""
    _run(
        lambda: commands.worker(
            dsn,
            processes=processes,
            queues=queues,
            imports=imports,
            batch_size=batch_size,
            lease_seconds=lease_seconds,
            grace_seconds=grace_seconds,
            cancel_grace_seconds=cancel_grace_seconds,
            poll_seconds=poll_seconds,
            listen=not no_listen,
            exit_when_idle=exit_when_idle,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            prune_after=prune_after,
            log_level=log_level,
        )
    )


@main.command()
@_dsn_option
@click.argument("job_type")
@click.option("--payload", default="{}", help="JSON object.")
@click.option("--org", "organization", default=None)
@click.option("--queue", default=None)
@click.option("--priority", type=int, default=None, help="0 critical .. 3 low.")
@click.option("--delay", default=None, help="e.g. 30s, 5m, 2h, 1d.")
@click.option("--dedup-key", default=None)
@click.option("--depends-on", multiple=True, type=int)
@click.option("--max-attempts", type=int, default=None)
@click.option("--timeout", type=int, default=None, help="Seconds; 0 = none.")
@click.option("--actor", default=None, help="Who creates the job (recorded as created_by).")
def enqueue(
    dsn: str | None,
    job_type: str,
    payload: str,
    organization: str | None,
    queue: str | None,
    priority: int | None,
    delay: str | None,
    dedup_key: str | None,
    depends_on: tuple[int, ...],
    max_attempts: int | None,
    timeout: int | None,
    actor: str | None,
) -> None:
    """Add a job; prints its id (and whether it was a duplicate) as JSON."""
    _run(
        lambda: commands.enqueue(
            dsn,
            job_type,
            payload,
            _echo_json,
            organization=organization,
            queue=queue,
            priority=priority,
            delay=delay,
            dedup_key=dedup_key,
            depends_on=depends_on,
            max_attempts=max_attempts,
            timeout=timeout,
            actor=actor,
        )
    )


@main.command()
@_dsn_option
@click.argument("job_id", type=int)
@click.option("--org", "organization", default=None, help="Act as this organization.")
def status(dsn: str | None, job_id: int, organization: str | None) -> None:
    """Show one job as JSON."""
    _run(lambda: commands.status(dsn, job_id, _echo_json, organization=organization))


@main.command(name="list")
@_dsn_option
@click.option("--org", "organization", default=None)
@click.option("--state", default=None)
@click.option("--type", "job_type", default=None)
@click.option("--queue", default=None)
@click.option("--since", type=click.DateTime(), default=None)
@click.option("--until", type=click.DateTime(), default=None)
@click.option("--limit", default=50, show_default=True, type=int)
@click.option(
    "--after-id", type=int, default=None, help="Keyset: the last id of the previous page."
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def list_(
    dsn: str | None,
    organization: str | None,
    state: str | None,
    job_type: str | None,
    queue: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
    after_id: int | None,
    as_json: bool,
) -> None:
    """List jobs, newest first."""
    _run(
        lambda: commands.list_jobs(
            dsn,
            click.echo,
            organization=organization,
            state=state,
            job_type=job_type,
            queue=queue,
            since=since,
            until=until,
            limit=limit,
            after_id=after_id,
            as_json=as_json,
        )
    )


@main.command()
@_dsn_option
@click.argument("job_id", type=int)
@click.option("--org", "organization", default=None)
@click.option("--json", "as_json", is_flag=True)
def history(dsn: str | None, job_id: int, organization: str | None, as_json: bool) -> None:
    """Every state change and attempt of a job."""
    _run(
        lambda: commands.history(
            dsn, job_id, click.echo, organization=organization, as_json=as_json
        )
    )


@main.command()
@_dsn_option
@click.argument("job_id", type=int)
@click.option("--org", "organization", default=None)
@click.option(
    "--actor", default=None, help="Who cancels (a 'creator' cancel policy checks it)."
)
def cancel(dsn: str | None, job_id: int, organization: str | None, actor: str | None) -> None:
    """Cancel a job (exit 1 if it already finished or is not yours to cancel)."""
    _run(
        lambda: commands.cancel(dsn, job_id, click.echo, organization=organization, actor=actor)
    )


@main.command()
@_dsn_option
@click.argument("job_id", type=int, required=False)
@click.option("--org", "organization", default=None)
@click.option("--all-dead", is_flag=True, help="Requeue every dead job (see --type).")
@click.option("--type", "job_type", default=None)
def retry(
    dsn: str | None,
    job_id: int | None,
    organization: str | None,
    all_dead: bool,
    job_type: str | None,
) -> None:
    """Requeue a dead or canceled job with its attempts reset."""
    if all_dead:
        _run(
            lambda: commands.retry_all_dead(
                dsn, click.echo, organization=organization, job_type=job_type
            )
        )
    if job_id is None:
        raise click.UsageError("give a JOB_ID or --all-dead")
    _run(lambda: commands.retry(dsn, job_id, click.echo, organization=organization))


@main.command()
@click.option("--jobs", "count", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--processes", default=2, show_default=True, type=click.IntRange(1, 64))
@_dsn_option
def demo(count: int, processes: int, dsn: str | None) -> None:
    """Embedded server, migrate, 1,000 jobs, a 2-process worker, the counts."""
    _run(lambda: commands.demo(dsn, click.echo, count=count, processes=processes))


@main.command()
@_dsn_option
@click.option(
    "--format",
    "fmt",
    default="table",
    show_default=True,
    type=click.Choice(["table", "json", "prometheus"]),
)
@click.option("--org", "organization", default=None)
def metrics(dsn: str | None, fmt: str, organization: str | None) -> None:
    """Queue depth, processing times, failure rates, workers, Postgres health."""
    _run(lambda: commands.metrics(dsn, click.echo, fmt=fmt, organization=organization))


@main.command(name="dead-letter")
@_dsn_option
@click.option("--org", "organization", default=None)
@click.option("--type", "job_type", default=None)
@click.option("--limit", default=50, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
def dead_letter(
    dsn: str | None, organization: str | None, job_type: str | None, limit: int, as_json: bool
) -> None:
    """List dead jobs, newest first."""
    _run(
        lambda: commands.dead_letter(
            dsn,
            click.echo,
            organization=organization,
            job_type=job_type,
            limit=limit,
            as_json=as_json,
        )
    )


@main.command()
@_dsn_option
@click.option("--org", "organization", default=None)
@click.option("--job", "job_id", type=int, default=None)
@click.option(
    "--timeout", type=float, default=None, help="Stop after this many seconds without an event."
)
def listen(
    dsn: str | None, organization: str | None, job_id: int | None, timeout: float | None
) -> None:
    """Print state and progress events as JSON lines."""
    _run(
        lambda: commands.listen(
            dsn, click.echo, organization=organization, job_id=job_id, timeout=timeout
        )
    )


@main.command()
@_dsn_option
@click.argument("job_id", type=int)
@click.option("--org", "organization", default=None)
def watch(dsn: str | None, job_id: int, organization: str | None) -> None:
    """A live progress bar until the job ends (exit 0 completed, 1 dead or canceled)."""
    _run(lambda: commands.watch(dsn, job_id, click.echo, organization=organization))


@main.command()
@_dsn_option
@click.option("--older-than", required=True, help="e.g. 30d, 12h.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 100_000))
def prune(dsn: str | None, older_than: str, batch_size: int) -> None:
    """Delete finished jobs and their history, in short batches."""
    _run(lambda: commands.prune(dsn, click.echo, older_than=older_than, batch_size=batch_size))


@main.command()
@_dsn_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8465, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--allow-actions", is_flag=True, help="Allow enqueue, cancel and retry (default: read-only)."
)
def dashboard(dsn: str | None, host: str, port: int, allow_actions: bool) -> None:
    """Serve the web dashboard and JSON API for operators.

    It shows every organization with pgjobs_admin's rights; to show each user
    only their organization, mount pgjobs.web.create_app(dsn,
    organization_for=...) in your own application instead.

    Example: pgjobs dashboard --port 8465 --allow-actions
    """
    _run(
        lambda: commands.dashboard(
            dsn, click.echo, host=host, port=port, allow_actions=allow_actions
        )
    )
# Periodic jobs (pgjobs/schedules/cli.py).
schedule_commands.register(main, _run, _dsn_option)


if __name__ == "__main__":  # pragma: no cover
    main()
