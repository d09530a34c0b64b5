"""``pgjobs schedules``, ``schedule``, ``pause``, ``resume``, ``trigger``,
``unschedule``: click parses, the plain functions below do the work."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import click

from pgjobs import commands, output
from pgjobs.payload import decode_cli
from pgjobs.schedules import api

Echo = Callable[[Any], None]

LIST_COLUMNS = [
    "organization",
    "name",
    "job_type",
    "cron",
    "timezone",
    "enabled",
    "next_fire_at",
    "last_fired_at",
    "last_job_id",
    "last_job_state",
]


def _iso(value: dt.datetime) -> str:
    return value.isoformat()


def list_schedules(dsn: str | None, echo: Echo, *, organization: str | None, as_json: bool) -> int:
    with commands.connection(dsn, organization) as conn:
        rows = api.list_schedules(conn, organization=organization)
    output.print_rows(echo, rows, LIST_COLUMNS, as_json)
    return 0


def add(
    dsn: str | None,
    name: str,
    job_type: str,
    cron: str,
    echo: Echo,
    *,
    payload: str,
    organization: str | None,
    timezone: str,
    catch_up: int | None,
) -> int:
    body = decode_cli(payload)
    with commands.connection(dsn, organization) as conn:
        next_at = api.schedule(
            conn,
            name,
            job_type,
            cron,
            body,
            organization=organization,
            timezone=timezone,
            catch_up=catch_up,
        )
    echo(json.dumps({"name": name, "next_fire_at": _iso(next_at)}))
    return 0


def verb(dsn: str | None, action: str, name: str, echo: Echo, *, organization: str | None) -> int:
    with commands.connection(dsn, organization) as conn:
        if action == "pause":
            api.pause_schedule(conn, name, organization=organization)
            echo(json.dumps({"name": name, "enabled": False}))
        elif action == "resume":
            next_at = api.resume_schedule(conn, name, organization=organization)
            echo(json.dumps({"name": name, "enabled": True, "next_fire_at": _iso(next_at)}))
        elif action == "trigger":
            job_id = api.trigger_schedule(conn, name, organization=organization)
            echo(json.dumps({"name": name, "job_id": job_id}))
        else:
            api.unschedule(conn, name, organization=organization)
            echo(json.dumps({"name": name, "removed": True}))
    return 0


_ORG_HELP = (
    "The schedule's organization; also scopes the session to it (needed by a "
    "pgjobs_app role). Without it: the session's own, or system schedules."
)


def register(
    main: click.Group,
    run: Callable[[Callable[[], int | None]], None],
    dsn_option: Callable[[Any], Any],
) -> None:
    """Adds the schedule commands to the ``pgjobs`` group."""

    @main.command(name="schedules")
    @dsn_option
    @click.option("--org", "organization", default=None, help="Only this organization's.")
    @click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
    def schedules_cmd(dsn: str | None, organization: str | None, as_json: bool) -> None:
        """List schedules, their next and last fire and last job.

        \b
        Example:
          pgjobs schedules --org acme
        """
        run(lambda: list_schedules(dsn, click.echo, organization=organization, as_json=as_json))

    @main.command(name="schedule")
    @dsn_option
    @click.argument("name")
    @click.argument("job_type")
    @click.argument("cron")
    @click.option(
        "--payload",
        default="{}",
        show_default=True,
        help="JSON object given to every job the schedule makes.",
    )
    @click.option("--org", "organization", default=None, help=_ORG_HELP)
    @click.option(
        "--tz",
        "timezone",
        default="UTC",
        show_default=True,
        help="IANA time zone the cron expression is read in.",
    )
    @click.option(
        "--catch-up",
        type=click.IntRange(1, 1000),
        default=None,
        help="After downtime, fire up to this many missed ticks (default 1: the latest).",
    )
    def schedule_cmd(
        dsn: str | None,
        name: str,
        job_type: str,
        cron: str,
        payload: str,
        organization: str | None,
        timezone: str,
        catch_up: int | None,
    ) -> None:
        """Create or update a periodic job; prints its next fire time.

        CRON has five fields (minute hour day month weekday), or six with
        seconds first. Invalid input exits 2 and writes nothing.

        \b
        Example:
          pgjobs schedule nightly-report send_report "0 6 * * *" --tz Europe/Berlin \\
              --org acme --payload '{"org_id": "acme"}'
        """
        run(
            lambda: add(
                dsn,
                name,
                job_type,
                cron,
                click.echo,
                payload=payload,
                organization=organization,
                timezone=timezone,
                catch_up=catch_up,
            )
        )

    helps = {
        "pause": (
            "Stop a schedule firing (missed ticks count as downtime).",
            "pgjobs pause nightly-report --org acme",
        ),
        "resume": (
            "Let a paused schedule fire again; prints its next fire time.",
            "pgjobs resume nightly-report --org acme",
        ),
        "trigger": (
            "Make one job from a schedule now (its next fire stays).",
            "pgjobs trigger nightly-report --org acme",
        ),
        "unschedule": (
            "Remove a schedule (the jobs it made stay).",
            "pgjobs unschedule nightly-report --org acme",
        ),
    }
    for action, (purpose, example) in helps.items():
        main.add_command(_verb_command(action, purpose, example, run, dsn_option))


def _verb_command(
    action: str,
    purpose: str,
    example: str,
    run: Callable[[Callable[[], int | None]], None],
    dsn_option: Callable[[Any], Any],
) -> click.Command:
    def callback(dsn: str | None, name: str, organization: str | None) -> None:
        run(lambda: verb(dsn, action, name, click.echo, organization=organization))

    callback.__doc__ = f"{purpose}\n\n\b\nExample:\n  {example}\n"
    command = click.command(name=action)(
        dsn_option(
            click.argument("name")(
                click.option("--org", "organization", default=None, help=_ORG_HELP)(callback)
            )
        )
    )
    command.help = (
        f"{purpose} Exit 1 if there is no such schedule (or it belongs to another "
        f"organization).\n\n\b\nExample:\n  {example}"
    )
    return command
