"""Claiming (``sql/queries/claim.sql``): what a worker takes to run, and when to look again."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, NamedTuple

from psycopg.rows import dict_row

from pgjobs.statements.base import Params, scalar, statement


class ClaimedJob(NamedTuple):
    """One job as the claim returned it, with the lease that fences its writes."""

    id: int
    job_type: str
    organization: str | None
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    timeout_seconds: int
    checkpoint: Any
    lease_token: int


def _claimed(found: list[Any]) -> list[ClaimedJob]:
    return [ClaimedJob(*row) for row in found]


def _claimed_by_name(found: list[Any]) -> list[ClaimedJob]:
    return [ClaimedJob(**row) for row in found]


@statement("job_claim", _claimed)
def claim(
    *,
    worker: str,
    queues: Sequence[str],
    n: int,
    lease_seconds: float,
    now: dt.datetime | None = None,
    job_types: Sequence[str] | None = None,
) -> Params:
    """Up to ``n`` due jobs of ``queues``, leased to ``worker`` (SKIP LOCKED); only
    of ``job_types``, the types the worker has handlers for (None: any type)."""
    return {
        "worker": worker,
        "queues": list(queues),
        "n": n,
        "lease_seconds": lease_seconds,
        "now": now,
        "job_types": None if job_types is None else list(job_types),
    }


@statement("testing_take_job", _claimed_by_name, row_factory=dict_row)
def take_job(*, job_id: int, worker: str, lease_seconds: float) -> Params:
    """One chosen queued or retrying job, due or not (pgjobs.testing.run_job)."""
    return {"id": job_id, "worker": worker, "lease_seconds": lease_seconds}


@statement("testing_claim", _claimed_by_name, row_factory=dict_row)
def claim_next(
    *,
    worker: str,
    queues: Sequence[str] | None,
    lease_seconds: float,
    now: dt.datetime | None = None,
) -> Params:
    """The next due job of ``queues`` (None: any), as a worker would claim it."""
    return {
        "worker": worker,
        "queues": None if queues is None else list(queues),
        "lease_seconds": lease_seconds,
        "now": now,
    }


def _seconds(found: list[Any]) -> float | None:
    value = scalar(found)
    return None if value is None else float(value)


@statement("job_next_run_at_seconds", _seconds)
def next_run_at_seconds(*, queues: Sequence[str], job_types: Sequence[str]) -> Params:
    """Seconds until the next queued or retrying job of ``queues`` and
    ``job_types`` is due; None if none."""
    return {"queues": list(queues), "job_types": list(job_types)}


def _none_active(found: list[Any]) -> bool:
    return bool(found) and found[0][0] == 0


@statement("job_active_count", _none_active)
def none_active(*, queues: Sequence[str], job_types: Sequence[str]) -> Params:
    """Whether ``queues`` hold no unfinished job of ``job_types`` at all (waiting
    ones included)."""
    return {"queues": list(queues), "job_types": list(job_types)}
