"""Reading and steering jobs: get, cancel, retry, list, history.

Each call runs on the caller's connection and within its transaction; row-level
security decides what the caller can see.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgjobs import _conn, sql
from pgjobs.errors import InvalidJob, JobNotFound, translated
from pgjobs.payload import check_text
from pgjobs.records import Event, Job
from pgjobs.states import State

MAX_LIST_LIMIT = 10_000


def _fetch(
    conn: psycopg.Connection[Any], name: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    with _conn.raw(conn).cursor(row_factory=dict_row) as cur, translated():
        _conn.own_types(cur)
        return cur.execute(sql.query(name), params).fetchall()


def get(conn: psycopg.Connection[Any], job_id: int) -> Job:
    """One job's public columns; JobNotFound if it does not exist or is not visible."""
    rows = _fetch(conn, "job_get", {"id": _job_id(job_id)})
    if not rows:
        raise JobNotFound(f"no job {job_id}")
    return Job.from_row(rows[0])


def cancel(conn: psycopg.Connection[Any], job_id: int) -> State:
    """Cancels a job; returns its state (canceled, or running while it stops).

    InvalidTransition if it already finished, JobNotFound if it does not exist.
    """
    return State(_fetch(conn, "job_cancel", {"id": _job_id(job_id)})[0]["state"])


def retry(conn: psycopg.Connection[Any], job_id: int) -> State:
    """Puts a dead or canceled job back in the queue with its attempts reset."""
    return State(_fetch(conn, "job_retry", {"id": _job_id(job_id)})[0]["state"])


def list_jobs(
    conn: psycopg.Connection[Any],
    *,
    organization: str | None = None,
    state: str | None = None,
    job_type: str | None = None,
    queue: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 100,
    after_id: int | None = None,
) -> list[Job]:
    """Jobs newest first. Page with ``after_id`` = the last id of the previous page."""
    for name, value in (("organization", organization), ("job_type", job_type), ("queue", queue)):
        check_text(name, value)
    if state is not None and state not in State.__members__.values():
        raise InvalidJob(f"unknown state {state!r}; one of {', '.join(State)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidJob(f"limit must be 1-{MAX_LIST_LIMIT}")
    rows = _fetch(
        conn,
        "job_list",
        {
            "organization": organization,
            "state": state,
            "job_type": job_type,
            "queue": queue,
            "since": since,
            "until": until,
            "limit": limit,
            "after_id": None if after_id is None else _job_id(after_id),
        },
    )
    return [Job.from_row(row) for row in rows]


def history(conn: psycopg.Connection[Any], job_id: int) -> list[Event]:
    """Every state change and attempt of a job, oldest first."""
    return [Event.from_row(row) for row in _fetch(conn, "job_history", {"id": _job_id(job_id)})]


def state_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {r["state"]: int(r["n"]) for r in _fetch(conn, "job_state_counts", {})}


def type_state_counts(conn: psycopg.Connection[Any]) -> list[tuple[str, str, int]]:
    rows = _fetch(conn, "job_type_state_counts", {})
    return [(r["job_type"], r["state"], int(r["n"])) for r in rows]


def _job_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidJob(f"a job id is a positive integer, got {value!r}")
    return value
