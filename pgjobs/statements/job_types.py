"""Job types (``sql/queries/job_types.sql``): the registry's writes.

No statement here reads a type's ``handler`` for a worker: the stored path is a
record of what registered the type, never something a worker imports."""

from __future__ import annotations

import dataclasses
from typing import Any

from psycopg.rows import dict_row

from pgjobs.statements.base import Params, flag, statement


def _fields(spec: Any) -> Params:
    """A JobType's columns, by field name (the query's parameter names)."""
    return dataclasses.asdict(spec)


def _before(found: list[Any]) -> dict[str, Any] | None:
    return dict(found[0]) if found else None


@statement("job_type_upsert", _before, row_factory=dict_row)
def upsert(spec: Any) -> Params:
    """Creates or updates one job type from a ``registry.JobType``; returns its
    queue, handler, max_attempts and timeout_seconds from before, if it existed."""
    return _fields(spec)


@statement("job_type_may_write", flag)
def may_write() -> None:
    """Whether this role may define job types (application roles may not)."""
    return None


@statement("job_type_ensure", flag)
def ensure(spec: Any) -> Params:
    """Creates a type if missing; whether the row is still this transaction's own."""
    return _fields(spec)
