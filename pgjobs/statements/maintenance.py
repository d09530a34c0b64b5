"""Maintenance (``sql/queries/maintenance.sql``): the workers' vacuum of the jobs
table, and retention's batches and lock."""

from __future__ import annotations

from typing import Any

from pgjobs.statements.base import Params, flag, nothing, statement


def _vacuum_due(found: list[Any]) -> tuple[bool, str | None]:
    return (bool(found[0][0]), found[0][1]) if found else (False, None)


@statement("jobs_vacuum_lock", _vacuum_due)
def vacuum_lock(
    *, key: int, threshold: int, scale: float, last_horizon: str | None = None
) -> Params:
    """Whether this session took the vacuum lock because a vacuum is due and
    can remove something, and the horizon it met (the oldest transaction
    holding back what a vacuum may remove; None: none seen). ``last_horizon``:
    the one the previous vacuum met."""
    return {"key": key, "threshold": threshold, "scale": scale, "last_horizon": last_horizon}


@statement("jobs_vacuum", nothing, fetch=False)
def vacuum() -> None:
    return None


@statement("jobs_vacuum_unlock", nothing, fetch=False)
def vacuum_unlock(*, key: int) -> Params:
    return {"key": key}


def _count(found: list[Any]) -> int:
    return len(found)


@statement("job_prune_batch", _count)
def prune_batch(*, older_than_seconds: float, batch_size: int) -> Params:
    """Deletes up to ``batch_size`` finished jobs past the cutoff; how many went."""
    return {"older_than_seconds": older_than_seconds, "batch_size": batch_size}


@statement("prune_lock_try", flag)
def prune_lock_try() -> None:
    return None


@statement("prune_unlock", nothing, fetch=False)
def prune_unlock() -> None:
    return None
