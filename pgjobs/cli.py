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

from pgjobs import cli_help, cli_server, cli_worker, commands
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
@click.argument("job_type")
@click.option("--payload", default="{}", help="The handler's keyword arguments, a JSON object.")
@click.option("--org", "organization", default=None, help="The job's organization (tenant).")
@click.option("--queue", default=None, help="Queue (default: the job type's).")
@click.option("--priority", type=int, default=None, help="0 critical .. 3 low (default: 2).")
@click.option("--delay", default=None, help="Run no sooner than this from now: 30s, 5m, 2h, 1d.")
@click.option("--dedup-key", default=None, help="A live job with this key makes this a no-op.")
@click.option(
    "--depends-on", multiple=True, type=int, help="Run after this job completes (repeatable)."
)
@click.option(
    "--max-attempts", type=int, default=None, help="Attempts before dead (default: the type's)."
)
@click.option("--timeout", type=int, default=None, help="Seconds per attempt; 0 = none.")
@click.option("--actor", default=None, help="Who creates the job (recorded as created_by).")
def enqueue(dsn: str | None, job_type: str, payload: str, **options: Any) -> None:
    """Add a job; print its id as JSON.

    Prints {"id": ..., "duplicate": ...}: a live job with the same dedup key
    is returned instead of a new one.
    """
    _run(lambda: commands.enqueue(dsn, job_type, payload, _echo_json, **options))


@main.command()
@_dsn_option
@click.argument("job_id", type=int)
@click.option("--org", "organization", default=None, help="Act as this organization.")
def status(dsn: str | None, job_id: int, organization: str | None) -> None:
    """Show one job as JSON."""
    _run(lambda: commands.status(dsn, job_id, _echo_json, organization=organization))


@main.command(name="list")
@_dsn_option
@click.option("--org", "organization", default=None, help="Act as this organization.")
@click.option("--state", default=None, help="Only jobs in this state (e.g. dead).")
@click.option("--type", "job_type", default=None, help="Only jobs of this type.")
@click.option("--queue", default=None, help="Only jobs on this queue.")
@click.option("--since", type=click.DateTime(), default=None, help="Created at or after.")
@click.option("--until", type=click.DateTime(), default=None, help="Created before.")
@click.option("--limit", default=50, show_default=True, type=int, help="Most jobs shown.")
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
@click.option("--org", "organization", default=None, help="Act as this organization.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def history(dsn: str | None, job_id: int, organization: str | None, as_json: bool) -> None:
    """Show every state change and attempt of a job."""
    _run(
        lambda: commands.history(
            dsn, job_id, click.echo, organization=organization, as_json=as_json
        )
    )


@main.command()
@_dsn_option
@click.argument("job_id", type=int)
@click.option("--org", "organization", default=None, help="Act as this organization.")
@click.option("--actor", default=None, help="Who cancels (a 'creator' cancel policy checks it).")
def cancel(dsn: str | None, job_id: int, organization: str | None, actor: str | None) -> None:
    """Cancel a job (exit 1 if finished or not yours to cancel)."""
    _run(lambda: commands.cancel(dsn, job_id, click.echo, organization=organization, actor=actor))


@main.command()
@_dsn_option
@click.argument("job_id", type=int, required=False)
@click.option("--org", "organization", default=None, help="Act as this organization.")
@click.option("--all-dead", is_flag=True, help="Requeue every dead job (see --type).")
@click.option("--type", "job_type", default=None, help="With --all-dead: only this type.")
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
@click.option(
    "--jobs",
    "count",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Jobs to enqueue.",
)
@click.option(
    "--processes",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes.",
)
@_dsn_option
def demo(count: int, processes: int, dsn: str | None) -> None:
    """Run 1,000 demo jobs through a worker and show the counts.

    Creates (or recreates) the database pgjobs_demo on the server pgjobs uses
    (the embedded one without --dsn / PGJOBS_DSN), migrates it, enqueues jobs
    of three types, runs a worker until they are done and prints the counts.
    """
    _run(lambda: commands.demo(dsn, click.echo, count=count, processes=processes))


@main.command()
@_dsn_option
@click.option(
    "--format",
    "fmt",
    default="table",
    show_default=True,
    type=click.Choice(["table", "json", "prometheus"]),
    help="Tables for people, one JSON object, or Prometheus text.",
)
@click.option("--org", "organization", default=None, help="Act as this organization.")
def metrics(dsn: str | None, fmt: str, organization: str | None) -> None:
    """Show queue depth, timings, failures and workers.

    And Postgres health: jobs' dead tuples, oldest transaction, NOTIFY queue use.
    """
    _run(lambda: commands.metrics(dsn, click.echo, fmt=fmt, organization=organization))


@main.command(name="dead-letter")
@_dsn_option
@click.option("--org", "organization", default=None, help="Act as this organization.")
@click.option("--type", "job_type", default=None, help="Only jobs of this type.")
@click.option("--limit", default=50, show_default=True, type=int, help="Most jobs shown.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
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
@click.option("--org", "organization", default=None, help="Act as this organization.")
@click.option("--job", "job_id", type=int, default=None, help="Only events of this job.")
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
@click.option("--org", "organization", default=None, help="Act as this organization.")
def watch(dsn: str | None, job_id: int, organization: str | None) -> None:
    """Show a live progress bar until the job ends.

    Exits 0 when the job completes, 1 when it ends dead or canceled.
    """
    _run(lambda: commands.watch(dsn, job_id, click.echo, organization=organization))


@main.command()
@_dsn_option
@click.option("--older-than", required=True, help="Finished longer ago than this: e.g. 30d, 12h.")
@click.option(
    "--batch-size",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Jobs deleted per transaction.",
)
def prune(dsn: str | None, older_than: str, batch_size: int) -> None:
    """Delete finished jobs and their history, in short batches."""
    _run(lambda: commands.prune(dsn, click.echo, older_than=older_than, batch_size=batch_size))


@main.command()
@_dsn_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8465,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port to listen on.",
)
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


cli_worker.attach(main, _run, _dsn_option)
cli_server.attach(main, _run, _dsn_option)
cli_help.add_examples(main)


if __name__ == "__main__":  # pragma: no cover
    main()
