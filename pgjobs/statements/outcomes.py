"""How an attempt ends (``sql/queries/outcomes.sql``): completed, failed, or
given back unstarted. Every write is fenced by the claim's lease token, and
returns the rows it moved: none means someone else got there first."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from pgjobs.statements.base import Params, rows, statement


class Leased(Protocol):
    """A job held under a lease: a ClaimedJob, or a :class:`Lease` the supervisor
    reads from a worker's slot."""

    @property
    def id(self) -> int: ...

    @property
    def lease_token(self) -> int: ...


class Lease(NamedTuple):
    id: int
    lease_token: int


class Completed(NamedTuple):
    result: str | None  # JSON text
    duration_ms: float


class Failed(NamedTuple):
    error_class: str
    message: str
    traceback: str | None
    permanent: bool
    duration_ms: float | None  # None: the attempt was killed, its length unknown


Outcome = Completed | Failed


def _numbers(values: list[int] | list[float]) -> str:
    """A Postgres array literal of numbers (repr of a float is exact)."""
    return "{" + ",".join(map(repr, values)) + "}"


@statement("job_complete_many", rows)
def complete_many(
    items: Sequence[tuple[Leased, Completed]], *, now: dt.datetime | None = None
) -> Params:
    """Ends successful attempts; rows (id, state) of the jobs it moved.

    Sent as array and JSON literals: building one string is several times
    cheaper than adapting a list item by item, and this runs for every job."""
    return {
        "ids": _numbers([j.id for j, _ in items]),
        "tokens": _numbers([j.lease_token for j, _ in items]),
        "results": "[" + ",".join("null" if o.result is None else o.result for _, o in items) + "]",
        "durations": _numbers([o.duration_ms for _, o in items]),
        "now": now,
    }


@statement("job_fail_many", rows)
def fail_many(items: Sequence[tuple[Leased, Failed]], *, now: dt.datetime | None = None) -> Params:
    """Ends failed attempts (retrying, dead or canceled); rows (id, state, run_at)."""
    return {
        "ids": [j.id for j, _ in items],
        "tokens": [j.lease_token for j, _ in items],
        "error_classes": [o.error_class for _, o in items],
        "messages": [o.message for _, o in items],
        "tracebacks": [o.traceback for _, o in items],
        "permanent": [o.permanent for _, o in items],
        "durations": [o.duration_ms for _, o in items],
        "now": now,
    }


def _ids(found: list[Any]) -> list[int]:
    return [row[0] for row in found]


@statement("job_return_many", _ids)
def return_many(jobs: Sequence[Leased]) -> Params:
    """Gives claimed jobs back without counting the attempt; the ids it moved."""
    return {"ids": [j.id for j in jobs], "tokens": [j.lease_token for j in jobs]}
