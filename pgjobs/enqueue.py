"""Enqueue on the caller's connection, inside the caller's transaction.

pgjobs never commits, rolls back or opens a transaction of its own here: the
job becomes visible to workers exactly when the caller commits.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from psycopg import ConnectionInfo

from pgjobs import registry
from pgjobs.errors import InvalidJob, translated
from pgjobs.payload import check_text, encode
from pgjobs.statements import enqueue as statements
from pgjobs.statements.enqueue import EnqueueResult, NewJob
from pgjobs.steps import Steps, blocking

__all__ = ["EnqueueResult", "enqueue", "enqueue_many", "job_params"]


def _seconds(value: float | dt.timedelta | None, name: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidJob(f"{name} must be a number of seconds or a timedelta")
    if seconds < 0:
        raise InvalidJob(f"{name} must not be negative, got {seconds}")
    return float(seconds)


def _int(value: object, name: str, low: int, high: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJob(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"{low}-{high}" if high is not None else f">= {low}"
        raise InvalidJob(f"{name} must be {bound}, got {value}")
    return value


def job_params(
    job_type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    organization: str | None = None,
    queue: str | None = None,
    priority: int | None = None,
    run_at: dt.datetime | None = None,
    delay: float | dt.timedelta | None = None,
    dedup_key: str | None = None,
    depends_on: Iterable[int] = (),
    max_attempts: int | None = None,
    timeout: float | dt.timedelta | None = None,
) -> NewJob:
    """Validates one job's arguments into what the enqueue statements take."""
    if not isinstance(job_type, str) or not job_type:
        raise InvalidJob("job_type must be a non-empty string")
    check_text("job_type", job_type, max_length=200)
    check_text("organization", organization)
    if organization == "":
        raise InvalidJob("organization must not be empty (None makes a system job)")
    check_text("queue", queue, max_length=200)
    check_text("dedup_key", dedup_key)
    if run_at is not None and delay is not None:
        raise InvalidJob("give run_at or delay, not both")
    if run_at is not None and not isinstance(run_at, dt.datetime):
        raise InvalidJob("run_at must be a datetime")
    if run_at is not None and run_at.tzinfo is None:
        raise InvalidJob("run_at must be timezone-aware")
    delay_s = _seconds(delay, "delay")
    if delay_s is not None:
        try:
            run_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay_s)
        except OverflowError as exc:
            raise InvalidJob(f"delay is too long: {delay_s} seconds") from exc
    timeout_s = _seconds(timeout, "timeout")
    try:
        parents = list(depends_on or ())
    except TypeError as exc:
        raise InvalidJob("depends_on must be a sequence of job ids") from exc
    for parent in parents:
        if isinstance(parent, bool) or not isinstance(parent, int):
            raise InvalidJob(f"depends_on must hold job ids, got {parent!r}")
    return NewJob(
        job_type=job_type,
        payload=encode(payload),
        organization=organization,
        queue=queue,
        priority=_int(priority, "priority", 0, 3),
        run_at=run_at,
        dedup_key=dedup_key,
        depends_on=parents or None,
        max_attempts=_int(max_attempts, "max_attempts", 1),
        timeout_seconds=None if timeout_s is None else int(timeout_s),
    )


def enqueue_steps(
    info: ConnectionInfo,
    job_type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    organization: str | None = None,
    queue: str | None = None,
    priority: int | None = None,
    run_at: dt.datetime | None = None,
    delay: float | dt.timedelta | None = None,
    dedup_key: str | None = None,
    depends_on: Iterable[int] = (),
    max_attempts: int | None = None,
    timeout: float | dt.timedelta | None = None,
) -> Steps[EnqueueResult]:
    """Adds one job; a live duplicate's id comes back with ``duplicate=True``.

    ``None`` means the job type's default; ``delay`` (seconds or a timedelta) and
    ``run_at`` (timezone-aware) are alternatives.
    """
    job = job_params(
        job_type,
        payload,
        organization=organization,
        queue=queue,
        priority=priority,
        run_at=run_at,
        delay=delay,
        dedup_key=dedup_key,
        depends_on=depends_on,
        max_attempts=max_attempts,
        timeout=timeout,
    )
    types = registry.current()
    yield from types.ensure_steps(info, job_type)
    with _unknown_type_resync(types), translated():
        result: EnqueueResult = yield statements.enqueue.bind(job)
    return result


def enqueue_many_steps(
    info: ConnectionInfo, jobs: Sequence[Mapping[str, Any]]
) -> Steps[list[EnqueueResult]]:
    """Adds many jobs in one statement; results are in input order.

    Each item is a mapping with ``job_type`` and the keyword arguments of
    :func:`enqueue` (``payload``, ``organization``, ``delay``, ...).
    """
    if not jobs:
        return []
    elements = []
    types = set()
    for item in jobs:
        fields = dict(item)
        if "job_type" not in fields:
            raise InvalidJob("each job needs a job_type")
        job = job_params(fields.pop("job_type"), fields.pop("payload", None), **fields)
        types.add(job.job_type)
        params: dict[str, Any] = job._asdict()
        if job.run_at is not None:
            params["run_at"] = job.run_at.isoformat()
        payload = params.pop("payload")  # JSON text already: spliced in, not decoded again
        head = json.dumps({k: v for k, v in params.items() if v is not None}, ensure_ascii=False)
        elements.append(f'{head[:-1]},"payload":{payload}}}')
    for name in types:
        yield from registry.current().ensure_steps(info, name)
    text = "[" + ",".join(elements) + "]"
    with translated():
        results: list[EnqueueResult] = yield statements.enqueue_many.bind(jobs=text)
    return results


enqueue = blocking(enqueue_steps)
enqueue_many = blocking(enqueue_many_steps)


class _unknown_type_resync:
    """If the database lost a type we thought we wrote (the caller rolled back
    that transaction), forget it so the next enqueue writes it again."""

    def __init__(self, types: registry.Registry) -> None:
        self.types = types

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc is not None:
            self.types.forget_synced()
