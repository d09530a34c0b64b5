"""Reading and steering jobs: get, cancel, retry, list, history.

Each call runs on the caller's connection and within its transaction; row-level
security decides what the caller can see.
"""

from __future__ import annotations

import datetime as dt
from typing import TypeVar

from psycopg import ConnectionInfo

from pgjobs.errors import InvalidJob, JobNotFound, translated
from pgjobs.payload import check_text
from pgjobs.records import Event, Job
from pgjobs.statements import Bound
from pgjobs.statements import control as statements
from pgjobs.states import State
from pgjobs.steps import Steps, blocking

MAX_LIST_LIMIT = 10_000
T = TypeVar("T")


def _one(stmt: Bound[T]) -> Steps[T]:
    """One statement, its errors translated."""
    with translated():
        value: T = yield stmt
    return value


def get_steps(info: ConnectionInfo, job_id: int) -> Steps[Job]:
    """One job's public columns; JobNotFound if it does not exist or is not visible."""
    job = yield from _one(statements.get.bind(job_id=_job_id(job_id)))
    if job is None:
        raise JobNotFound(f"no job {job_id}")
    return job


def cancel_steps(info: ConnectionInfo, job_id: int) -> Steps[State]:
    """Cancels a job; returns its state (canceled, or running while it stops).

    InvalidTransition if it already finished, JobNotFound if it does not exist.
    """
    return (yield from _one(statements.cancel.bind(job_id=_job_id(job_id))))


def retry_steps(info: ConnectionInfo, job_id: int) -> Steps[State]:
    """Puts a dead or canceled job back in the queue with its attempts reset."""
    return (yield from _one(statements.retry.bind(job_id=_job_id(job_id))))


def list_jobs_steps(
    info: ConnectionInfo,
    *,
    organization: str | None = None,
    state: str | None = None,
    job_type: str | None = None,
    queue: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 100,
    after_id: int | None = None,
) -> Steps[list[Job]]:
    """Jobs newest first. Page with ``after_id`` = the last id of the previous page."""
    for name, value in (("organization", organization), ("job_type", job_type), ("queue", queue)):
        check_text(name, value)
    if state is not None and state not in State.__members__.values():
        raise InvalidJob(f"unknown state {state!r}; one of {', '.join(State)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidJob(f"limit must be 1-{MAX_LIST_LIMIT}")
    after = None if after_id is None else _job_id(after_id)
    where = statements.JobFilter(organization, state, job_type, queue, since, until, limit, after)
    return (yield from _one(statements.list_jobs.bind(where)))


def history_steps(info: ConnectionInfo, job_id: int) -> Steps[list[Event]]:
    """Every state change and attempt of a job, oldest first."""
    return (yield from _one(statements.history.bind(job_id=_job_id(job_id))))


def _state_counts(info: ConnectionInfo) -> Steps[dict[str, int]]:
    return (yield from _one(statements.state_counts.bind()))


def _type_state_counts(info: ConnectionInfo) -> Steps[list[tuple[str, str, int]]]:
    return (yield from _one(statements.type_state_counts.bind()))


get = blocking(get_steps)
cancel = blocking(cancel_steps)
retry = blocking(retry_steps)
list_jobs = blocking(list_jobs_steps)
history = blocking(history_steps)
state_counts = blocking(_state_counts)
type_state_counts = blocking(_type_state_counts)


def _job_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidJob(f"a job id is a positive integer, got {value!r}")
    return value
