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


def _plain(found: list[Any]) -> list[int] | None:
    ids: list[int] | None = found[0][0]  # bigint[] arrives as a list of ints
    return ids


@statement("job_enqueue_plain", _plain)
def enqueue_plain(
    *,
    job_type: list[str],
    payloads: str,
    organization: list[str | None] | None,
    queue: list[str | None] | None,
    priority: list[int | None] | None,
    run_at: list[dt.datetime | None] | None,
    max_attempts: list[int | None] | None,
    timeout_seconds: list[int | None] | None,
) -> Params:
    """Plain jobs as one list per column (one element: the same for every job;
    None: NULL for every job) and their payloads as one JSON array text; the
    new ids in input order, or None when the batch is not plain."""
    return {
        "job_type": job_type,
        "payloads": payloads,
        "organization": organization,
        "queue": queue,
        "priority": priority,
        "run_at": run_at,
        "max_attempts": max_attempts,
        "timeout_seconds": timeout_seconds,
    }


@statement("job_enqueue_plain_head", _plain)
def enqueue_plain_head(*, head: NewJob, payloads: str) -> Params:
    """Plain jobs that share every field but the payload: those fields once
    (``head``, its payload ignored) and the payloads as one JSON array text;
    the new ids in input order, or None when the batch is not plain."""
    params: dict[str, Any] = head._asdict()
    del params["payload"], params["dedup_key"], params["depends_on"]
    params["payloads"] = payloads
    return params
