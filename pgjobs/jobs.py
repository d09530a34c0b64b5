"""Reading and steering jobs: get, cancel, retry, list, history.

Each call runs on the caller's connection and within its transaction; row-level
security decides what the caller can see.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

import psycopg

from pgjobs import _conn
from pgjobs.errors import InvalidJob, JobNotFound, translated
from pgjobs.payload import check_text
from pgjobs.records import Event, Job
from pgjobs.statements import Bound, run
from pgjobs.statements import control as statements
from pgjobs.states import State

MAX_LIST_LIMIT = 10_000
T = TypeVar("T")


def _run(conn: Any, stmt: Bound[T]) -> T:
    """On the caller's connection (psycopg or an ORM's), errors translated."""
    with translated():
        return run(_conn.raw(conn), stmt)


def get(conn: psycopg.Connection[Any], job_id: int) -> Job:
    """One job's public columns; JobNotFound if it does not exist or is not visible."""
    job = _run(conn, statements.get.bind(job_id=_job_id(job_id)))
    if job is None:
        raise JobNotFound(f"no job {job_id}")
    return job


def cancel(conn: psycopg.Connection[Any], job_id: int) -> State:
    """Cancels a job; returns its state (canceled, or running while it stops).

    InvalidTransition if it already finished, JobNotFound if it does not exist.
    """
    return _run(conn, statements.cancel.bind(job_id=_job_id(job_id)))


def retry(conn: psycopg.Connection[Any], job_id: int) -> State:
    """Puts a dead or canceled job back in the queue with its attempts reset."""
    return _run(conn, statements.retry.bind(job_id=_job_id(job_id)))


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
    after = None if after_id is None else _job_id(after_id)
    where = statements.JobFilter(organization, state, job_type, queue, since, until, limit, after)
    return _run(conn, statements.list_jobs.bind(where))


def history(conn: psycopg.Connection[Any], job_id: int) -> list[Event]:
    """Every state change and attempt of a job, oldest first."""
    return _run(conn, statements.history.bind(job_id=_job_id(job_id)))


def state_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return _run(conn, statements.state_counts.bind())


def type_state_counts(conn: psycopg.Connection[Any]) -> list[tuple[str, str, int]]:
    return _run(conn, statements.type_state_counts.bind())


def _job_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidJob(f"a job id is a positive integer, got {value!r}")
    return value
