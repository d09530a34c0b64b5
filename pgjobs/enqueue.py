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

from pgjobs import limits, registry
from pgjobs.errors import InvalidJob, translated
from pgjobs.payload import encode
from pgjobs.statements import enqueue as statements
from pgjobs.statements.enqueue import EnqueueResult, NewJob
from pgjobs.steps import Steps, blocking

__all__ = ["EnqueueResult", "enqueue", "enqueue_many", "job_params"]


# A delay reaches at most a few thousand years: run_at must stay before 9999.
_MAX_DELAY_SECONDS = 1000 * 365 * 86400


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
    """Validates one job's arguments into what the enqueue statements take.

    The database checks every limit again (pgjobs.limits mirrors it); these
    checks give a Python caller a clear InvalidJob before a round trip.
    """
    if not isinstance(job_type, str) or not job_type:
        raise InvalidJob("job_type must be a non-empty string")
    limits.check_name("job_type", job_type)
    if organization == "":
        raise InvalidJob("organization must not be empty (None makes a system job)")
    limits.check_name("organization", organization)
    limits.check_name("queue", queue)
    limits.check_dedup_key(dedup_key)
    if run_at is not None and delay is not None:
        raise InvalidJob("give run_at or delay, not both")
    run_at = limits.check_run_at(run_at)
    delay_s = limits.seconds("delay", delay, _MAX_DELAY_SECONDS)
    if delay_s is not None:
        run_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay_s)
    timeout_s = limits.seconds("timeout", timeout, limits.MAX_TIMEOUT_SECONDS)
    parents = limits.check_depends_on(depends_on)
    return NewJob(
        job_type=job_type,
        payload=encode(payload),
        organization=organization,
        queue=queue,
        priority=limits.check_int("priority", priority, 0, 3),
        run_at=run_at,
        dedup_key=dedup_key,
        depends_on=parents or None,
        max_attempts=limits.check_int("max_attempts", max_attempts, 1, limits.MAX_ATTEMPTS),
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
    heads: dict[frozenset[tuple[str, type, Any]], NewJob] = {}
    distinct: list[NewJob] = []  # each head once, in the order first met
    batch: list[tuple[NewJob, str]] = []
    plain: dict[str, NewJob] = {}  # heads of jobs given as only a job_type (and a payload)
    for item in jobs:
        # The usual job, a dict of a job_type and at most a payload, inline (a
        # function call per job costs more than the rest of its work): its
        # fields are looked up by the job_type alone, no key to build.
        if type(item) is dict and (len(item) == 1 or (len(item) == 2 and "payload" in item)):
            job_type = item.get("job_type")
            if type(job_type) is str:
                head = plain.get(job_type)
                if head is None:
                    head = plain[job_type] = job_params(job_type)
                    distinct.append(head)
                payload = item.get("payload")
                empty = payload is None or (type(payload) is dict and not payload)
                batch.append((head, "{}" if empty else encode(payload)))
                continue
        batch.append(_job(item, heads, distinct))
    for name in {head.job_type for head in distinct}:
        yield from registry.current().ensure_steps(info, name)
    with translated():
        if not any(head.dedup_key is not None or head.depends_on for head in distinct):
            # Plain jobs, as columns: no JSON object per job to build or parse;
            # one kind of job as its fields once and the payloads.
            ids: list[int] | None = yield (
                statements.enqueue_plain_head.bind(head=distinct[0], payloads=_payloads(batch))
                if len(distinct) == 1
                else statements.enqueue_plain.bind(**_columns(batch, distinct))
            )
            if ids is not None:
                # tuple.__new__ straight: a NamedTuple's own __new__ is Python code.
                return [_new_result(EnqueueResult, (job_id, False)) for job_id in ids]
            # Not plain after all (a type that dedups by payload, a disabled or
            # unknown one, another organization): the row trigger's path, which
            # enqueues it or raises what a plain INSERT of it would.
        results: list[EnqueueResult] = yield statements.enqueue_many.bind(jobs=_document(batch))
    return results


def _job(
    item: Mapping[str, Any],
    heads: dict[frozenset[tuple[str, type, Any]], NewJob],
    distinct: list[NewJob],
) -> tuple[NewJob, str]:
    """One job's validated fields (its payload left out) and its payload's JSON text.

    A batch mostly repeats the same fields around different payloads, so the
    fields other than the payload are validated once per distinct set of them
    (with their types: ``True`` is not ``1``), kept in ``heads`` and listed
    once in ``distinct``; a set met before is neither copied nor checked again.
    """
    if not isinstance(item, Mapping):
        raise InvalidJob(f"each job must be a mapping, got {type(item).__name__}")
    payload = item.get("payload")
    try:
        key: frozenset[tuple[str, type, Any]] | None = frozenset(
            [(name, type(value), value) for name, value in item.items() if name != "payload"]
        )
        head = heads.get(key)  # type: ignore[arg-type]
    except TypeError:  # an unhashable value (depends_on as a list): validated every time
        key, head = None, None
    if head is None:
        fields = dict(item)
        fields.pop("payload", None)
        if "job_type" not in fields:
            raise InvalidJob("each job needs a job_type")
        unknown = set(fields) - _JOB_FIELDS
        if unknown:
            raise InvalidJob(f"unknown job fields: {', '.join(sorted(map(str, unknown)))}")
        head = job_params(fields.pop("job_type"), None, **fields)
        distinct.append(head)
        if key is not None:
            heads[key] = head
    text = "{}" if payload is None or (type(payload) is dict and not payload) else encode(payload)
    return head, text


def _columns(batch: list[tuple[NewJob, str]], distinct: list[NewJob]) -> dict[str, Any]:
    """pgjobs.enqueue_plain's arguments: a column the same for every job as one
    value (None: NULL for all), and the payloads' texts joined as one JSON array."""

    def column(name: str) -> list[Any] | None:
        values = {getattr(head, name) for head in distinct}
        if len(values) == 1:
            value = values.pop()
            return None if value is None else [value]
        return [getattr(head, name) for head, _ in batch]

    return {
        "job_type": column("job_type"),
        "payloads": _payloads(batch),
        "organization": column("organization"),
        "queue": column("queue"),
        "priority": column("priority"),
        "run_at": column("run_at"),
        "max_attempts": column("max_attempts"),
        "timeout_seconds": column("timeout_seconds"),
    }


def _payloads(batch: list[tuple[NewJob, str]]) -> str:
    """The batch's payloads' texts as one JSON array text."""
    return "[" + ",".join([payload for _, payload in batch]) + "]"


def _document(batch: list[tuple[NewJob, str]]) -> str:
    """The batch as pgjobs.enqueue_jobs' JSON array text."""
    prefixes: dict[int, str] = {}  # per distinct head: its object's text up to the payload
    elements = []
    for head, payload in batch:
        prefix = prefixes.get(id(head))
        if prefix is None:
            prefix = prefixes[id(head)] = _prefix(head)
        elements.append(f"{prefix}{payload}}}")
    return "[" + ",".join(elements) + "]"


def _prefix(head: NewJob) -> str:
    """A job's JSON object text for pgjobs.enqueue_jobs up to its payload,
    whose text is spliced in after it, not decoded again."""
    params: dict[str, Any] = head._asdict()
    del params["payload"]
    if head.run_at is not None:
        params["run_at"] = head.run_at.isoformat()
    fields = json.dumps({k: v for k, v in params.items() if v is not None}, ensure_ascii=False)
    return f'{fields[:-1]},"payload":'


_new_result = tuple.__new__

enqueue = blocking(enqueue_steps)
enqueue_many = blocking(enqueue_many_steps)


_JOB_FIELDS = frozenset(
    (
        "job_type",
        "payload",
        "organization",
        "queue",
        "priority",
        "run_at",
        "delay",
        "dedup_key",
        "depends_on",
        "max_attempts",
        "timeout",
    )
)


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
