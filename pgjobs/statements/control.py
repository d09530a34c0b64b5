"""Reading and steering jobs (``sql/queries/control.sql``): get, cancel, retry,
list, history and counts, as the public records."""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

from psycopg.rows import dict_row

from pgjobs.records import Event, Job
from pgjobs.statements.base import Params, scalar, statement
from pgjobs.states import State


def _job(found: list[Any]) -> Job | None:
    return Job.from_row(found[0]) if found else None


def _jobs(found: list[Any]) -> list[Job]:
    return [Job.from_row(row) for row in found]


def _events(found: list[Any]) -> list[Event]:
    return [Event.from_row(row) for row in found]


@statement("job_get", _job, row_factory=dict_row, jsonb=True)
def get(*, job_id: int) -> Params:
    """One job's public columns, or None if it does not exist or is not visible."""
    return {"id": job_id}


def _state(found: list[Any]) -> State:
    return State(scalar(found))


@statement("job_cancel", _state)
def cancel(*, job_id: int) -> Params:
    """pgjobs.cancel: the job's state afterwards."""
    return {"id": job_id}


@statement("job_retry", _state)
def retry(*, job_id: int) -> Params:
    """pgjobs.retry: the job's state afterwards."""
    return {"id": job_id}


class JobFilter(NamedTuple):
    """Which jobs ``job_list`` returns; None leaves a filter out."""

    organization: str | None
    state: str | None
    job_type: str | None
    queue: str | None
    since: dt.datetime | None
    until: dt.datetime | None
    limit: int
    after_id: int | None  # the last id of the previous page


@statement("job_list", _jobs, row_factory=dict_row, jsonb=True)
def list_jobs(where: JobFilter) -> Params:
    """Newest first, keyset on id (never OFFSET)."""
    return where._asdict()


@statement("job_history", _events, row_factory=dict_row, jsonb=True)
def history(*, job_id: int) -> Params:
    """Every state change and attempt of one job, oldest first."""
    return {"id": job_id}


def _counts(found: list[Any]) -> dict[str, int]:
    return {state: int(n) for state, n in found}


@statement("job_state_counts", _counts)
def state_counts() -> None:
    return None


def _type_counts(found: list[Any]) -> list[tuple[str, str, int]]:
    return [(job_type, state, int(n)) for job_type, state, n in found]


@statement("job_type_state_counts", _type_counts)
def type_state_counts() -> None:
    return None


def _log_keys(found: list[Any]) -> dict[str, Any]:
    if not found:
        return {}
    job_type, organization, attempt = found[0]
    return {"job_type": job_type, "organization": organization, "attempt": attempt}


@statement("job_log_keys", _log_keys)
def log_keys(*, job_id: int) -> Params:
    """What the supervisor's events about one job carry besides its id."""
    return {"id": job_id}
