"""Enqueue (``sql/queries/enqueue.sql``): one job or many, through the database's
own enqueue functions."""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

from pgjobs.statements.base import Params, statement


class EnqueueResult(NamedTuple):
    id: int
    duplicate: bool


def _one(found: list[Any]) -> EnqueueResult:
    job_id, duplicate = found[0]
    return EnqueueResult(int(job_id), bool(duplicate))


class NewJob(NamedTuple):
    """One validated job, as the enqueue statements take it."""

    job_type: str
    payload: str  # JSON text
    organization: str | None
    queue: str | None
    priority: int | None
    run_at: dt.datetime | None
    dedup_key: str | None
    depends_on: list[int] | None
    max_attempts: int | None
    timeout_seconds: int | None


@statement("job_enqueue", _one)
def enqueue(job: NewJob) -> Params:
    """One job; its id, or the live duplicate's."""
    return job._asdict()


def _many(found: list[Any]) -> list[EnqueueResult]:
    return [EnqueueResult(int(job_id), bool(duplicate)) for _, job_id, duplicate in found]


@statement("job_enqueue_many", _many)
def enqueue_many(*, jobs: str) -> Params:
    """Many jobs from one JSON array text; one result per input, in input order."""
    return {"jobs": jobs}
