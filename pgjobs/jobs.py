"""Reading and steering jobs: get, cancel, retry, list, history.

Each call runs on the caller's connection and within its transaction; row-level
security decides what the caller can see.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from pgjobs.errors import InvalidJob, JobNotFound, translated
from pgjobs.payload import check_text
from pgjobs.statements import control
from pgjobs.states import State

MAX_LIST_LIMIT = 10_000


def get(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    """One job's public columns; JobNotFound if it does not exist or is not visible."""
    with translated():
        row: dict[str, Any] | None = control.get(conn, job_id=_job_id(job_id))
    if row is None:
        raise JobNotFound(f"no job {job_id}")
    return row


def cancel(conn: psycopg.Connection[Any], job_id: int) -> str:
    """Cancels a job; returns its state ('canceled', or 'running' while it stops).

    InvalidTransition if it already finished, JobNotFound if it does not exist.
    """
    with translated():
        return control.cancel(conn, job_id=_job_id(job_id))


def retry(conn: psycopg.Connection[Any], job_id: int) -> str:
    """Puts a dead or canceled job back in the queue with its attempts reset."""
    with translated():
        return control.retry(conn, job_id=_job_id(job_id))


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
) -> list[dict[str, Any]]:
    """Jobs newest first. Page with ``after_id`` = the last id of the previous page."""
    for name, value in (("organization", organization), ("job_type", job_type), ("queue", queue)):
        check_text(name, value)
    if state is not None and state not in State.__members__.values():
        raise InvalidJob(f"unknown state {state!r}; one of {', '.join(State)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidJob(f"limit must be 1-{MAX_LIST_LIMIT}")
    with translated():
        after = None if after_id is None else _job_id(after_id)
        where = control.JobFilter(organization, state, job_type, queue, since, until, limit, after)
        return control.list_jobs(conn, where)


def history(conn: psycopg.Connection[Any], job_id: int) -> list[dict[str, Any]]:
    """Every state change and attempt of a job, oldest first."""
    with translated():
        return control.history(conn, job_id=_job_id(job_id))


def state_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    with translated():
        return control.state_counts(conn)


def type_state_counts(conn: psycopg.Connection[Any]) -> list[tuple[str, str, int]]:
    with translated():
        return control.type_state_counts(conn)


def _job_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidJob(f"a job id is a positive integer, got {value!r}")
    return value
