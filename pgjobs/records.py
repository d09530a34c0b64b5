"""What reading a job returns: frozen records with attribute access.

Item access (``job["state"]``) keeps working for code written when these were
dicts, and ``dict(job)`` or :meth:`as_dict` gives plain data (for JSON, say).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar, Self

from pgjobs.states import State


class _Record:
    """Read-only mapping behaviour over a frozen dataclass's fields."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Any]]  # set by @dataclass, in field order

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.__dataclass_fields__

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.__dataclass_fields__ else default

    def keys(self) -> list[str]:
        return list(self.__dataclass_fields__)

    def as_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.__dataclass_fields__}


@dataclasses.dataclass(frozen=True, slots=True)
class Job(_Record):
    """One job's public columns (``pgjobs.jobs``), as ``get`` and ``list_jobs`` read them."""

    id: int
    job_type: str
    organization: str | None  # None: a system job
    queue: str
    priority: int
    payload: dict[str, Any]
    state: State
    run_at: dt.datetime
    attempt: int
    max_attempts: int
    timeout_seconds: int
    dedup_key: str | None
    depends_on: list[int] | None
    progress: Decimal | None
    progress_message: str | None
    checkpoint: Any
    result: Any
    last_error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    canceled_by: str | None
    worker: str | None  # the worker running (or that last ran) the attempt
    last_error_class: str | None
    created_by: str | None  # the actor (pgjobs.actor, else the login role) who enqueued it

    # The generated hash would fail on the payload (a dict); equal records share an id.
    def __hash__(self) -> int:
        return hash((Job, self.id))

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(**{**row, "state": State(row["state"])})


@dataclasses.dataclass(frozen=True, slots=True)
class Event(_Record):
    """One row of a job's history (``pgjobs.job_events``): a state change or an attempt."""

    id: int
    job_id: int
    organization: str | None
    job_type: str
    attempt: int
    from_state: State | None  # None: the job's creation
    to_state: State
    worker: str | None
    error_class: str | None
    message: str | None
    traceback: str | None
    duration_ms: float | None
    at: dt.datetime
    actor: str | None  # who made the change (pgjobs.actor, else the login role)

    def __hash__(self) -> int:
        return hash((Event, self.id))

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        source = row["from_state"]
        return cls(
            **{
                **row,
                "from_state": None if source is None else State(source),
                "to_state": State(row["to_state"]),
            }
        )
