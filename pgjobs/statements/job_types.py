"""Job types (``sql/queries/job_types.sql``): the registry's writes and the
handler lookups of the worker and pgjobs.testing."""

from __future__ import annotations

import dataclasses
from typing import Any

from pgjobs.statements.base import Params, flag, nothing, scalar, statement


def _fields(spec: Any) -> Params:
    """A JobType's columns, by field name (the query's parameter names)."""
    return dataclasses.asdict(spec)


@statement("job_type_upsert", nothing, fetch=False)
def upsert(spec: Any) -> Params:
    """Creates or updates one job type from a ``registry.JobType``."""
    return _fields(spec)


@statement("job_type_may_write", flag)
def may_write() -> None:
    """Whether this role may define job types (application roles may not)."""
    return None


@statement("job_type_ensure", flag)
def ensure(spec: Any) -> Params:
    """Creates a type if missing; whether the row is still this transaction's own."""
    return _fields(spec)


def _paths(found: list[Any]) -> dict[str, str]:
    return dict(found)


@statement("job_type_handlers", _paths)
def handler_paths() -> None:
    """Every job type's handler path, by type name."""
    return None


@statement("testing_handler", scalar)
def handler_path(*, job_type: str) -> Params:
    """One job type's handler path, or None."""
    return {"job_type": job_type}
