"""The schedule verbs, on the caller's connection and inside its transaction.

Each validates what Python can (the cron expression with cronsim, the time
zone with zoneinfo) and calls the SQL function of the same name, which checks
everything again for every other path (psql, a plain INSERT) and writes.
Another organization's schedule is invisible: naming it is "no schedule".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgjobs import _conn, sql
from pgjobs.errors import InvalidJob, translated
from pgjobs.payload import check_text, encode
from pgjobs.schedules import cron as cron_rules


def _one(conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> Any:
    with _conn.raw(conn).cursor(row_factory=dict_row) as cur, translated():
        row = cur.execute(sql.query(name), params).fetchone()
    assert row is not None
    return next(iter(row.values()))


def _name_params(name: str, organization: str | None) -> dict[str, Any]:
    if not isinstance(name, str) or not name:
        raise InvalidJob("a schedule name is a non-empty string")
    check_text("schedule name", name, max_length=200)
    check_text("organization", organization)
    if organization == "":
        raise InvalidJob("organization must not be empty (None: the session's, or system)")
    return {"name": name, "organization": organization}


def schedule(
    conn: psycopg.Connection[Any],
    name: str,
    job_type: str,
    cron: str,
    payload: Mapping[str, Any] | None = None,
    *,
    organization: str | None = None,
    timezone: str = "UTC",
    catch_up: int | None = None,
) -> dt.datetime:
    """Creates or updates a schedule; returns its next fire time.

    ``cron`` has five fields, or six with seconds first (cronsim's syntax);
    ``timezone`` is an IANA name. ``catch_up``: after downtime, fire up to this
    many of the latest missed ticks (default 1: the latest only).
    """
    params = _name_params(name, organization)
    if not isinstance(job_type, str) or not job_type:
        raise InvalidJob("job_type must be a non-empty string")
    check_text("job_type", job_type, max_length=200)
    cron_rules.check(cron, timezone)
    if catch_up is not None and (
        isinstance(catch_up, bool) or not isinstance(catch_up, int) or not 1 <= catch_up <= 1000
    ):
        raise InvalidJob(f"catch_up must be 1-1000, got {catch_up!r}")
    params.update(
        job_type=job_type,
        cron=cron,
        payload=encode(payload),
        timezone=timezone,
        catch_up=catch_up,
    )
    result: dt.datetime = _one(conn, "schedule_upsert", params)
    return result


def unschedule(
    conn: psycopg.Connection[Any], name: str, *, organization: str | None = None
) -> None:
    """Removes a schedule; the jobs it made stay. JobNotFound if there is none."""
    _one(conn, "schedule_delete", _name_params(name, organization))


def pause_schedule(
    conn: psycopg.Connection[Any], name: str, *, organization: str | None = None
) -> None:
    """Stops a schedule firing; what it misses counts as downtime on resume."""
    _one(conn, "schedule_pause", _name_params(name, organization))


def resume_schedule(
    conn: psycopg.Connection[Any], name: str, *, organization: str | None = None
) -> dt.datetime:
    """Fires again (the latest missed tick at once, or up to catch_up); returns
    the next fire time, which is in the past when a tick was missed."""
    result: dt.datetime = _one(conn, "schedule_resume", _name_params(name, organization))
    return result


def trigger_schedule(
    conn: psycopg.Connection[Any], name: str, *, organization: str | None = None
) -> int:
    """One job now, without moving the schedule; returns its id."""
    return int(_one(conn, "schedule_trigger", _name_params(name, organization)))


def list_schedules(
    conn: psycopg.Connection[Any], *, organization: str | None = None
) -> list[dict[str, Any]]:
    """Every visible schedule with its next and last fire and its last job's state."""
    check_text("organization", organization)
    with _conn.raw(conn).cursor(row_factory=dict_row) as cur, translated():
        return cur.execute(sql.query("schedule_list"), {"organization": organization}).fetchall()
