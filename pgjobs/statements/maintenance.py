"""Maintenance (``sql/queries/maintenance.sql``): the workers' vacuum of the jobs
table, retention's batches, and the turns (leases) both take."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pgjobs.statements.base import Params, flag, nothing, statement


def _vacuum_due(found: list[Any]) -> tuple[bool, str | None]:
    return (bool(found[0][0]), found[0][1]) if found else (False, None)


@statement("jobs_vacuum_turn", _vacuum_due)
def vacuum_turn(
    *,
    holder: str,
    seconds: float,
    threshold: int,
    scale: float,
    now: dt.datetime | None = None,
    last_horizon: str | None = None,
) -> Params:
    """Whether ``holder`` took the vacuum turn because a vacuum is due and can
    remove something, and the horizon it met (the oldest transaction holding
    back what a vacuum may remove; None: none seen). ``last_horizon``: the one
    the previous vacuum met."""
    return {
        "holder": holder,
        "seconds": seconds,
        "threshold": threshold,
        "scale": scale,
        "now": now,
        "last_horizon": last_horizon,
    }


@statement("jobs_vacuum", nothing, fetch=False)
def vacuum() -> None:
    return None


def _count(found: list[Any]) -> int:
    return len(found)


@statement("job_prune_batch", _count)
def prune_batch(*, older_than_seconds: float, batch_size: int) -> Params:
    """Deletes up to ``batch_size`` finished jobs past the cutoff; how many went."""
    return {"older_than_seconds": older_than_seconds, "batch_size": batch_size}


@statement("maintenance_lease_take", flag)
def lease_take(*, duty: str, holder: str, seconds: float, now: dt.datetime | None = None) -> Params:
    """Whether ``holder`` has the turn at ``duty`` for the next ``seconds`` (taken or renewed)."""
    return {"duty": duty, "holder": holder, "seconds": seconds, "now": now}


@statement("maintenance_lease_release", nothing, fetch=False)
def lease_release(*, duties: Sequence[str], holder: str) -> Params:
    """Gives back the turns ``holder`` has at ``duties``."""
    return {"duties": list(duties), "holder": holder}


def _int_or_none(found: list[Any]) -> int | None:
    return None if not found or found[0][0] is None else int(found[0][0])


@statement("partitions_ensure", _int_or_none)
def partitions_ensure(*, now: dt.datetime | None = None) -> Params:
    """Makes the partitions of finished jobs of this period and the next few;
    how many it made."""
    return {"now": now}


@statement("partition_drop_oldest", _int_or_none)
def partition_drop_oldest(*, older_than_seconds: float) -> Params:
    """Drops the oldest partition of finished jobs wholly past the cutoff; how
    many jobs it held, or None when no partition is that old."""
    return {"older_than_seconds": older_than_seconds}
