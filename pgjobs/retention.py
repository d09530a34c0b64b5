"""Retention: finished jobs and their history go, in short batches."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

import psycopg

from pgjobs.statements import maintenance as statements


def prune(
    conn: psycopg.Connection[Any],
    older_than_seconds: float,
    *,
    batch_size: int = 1000,
    progress: Any = None,
) -> int:
    """Deletes finished jobs (and their history) older than the cutoff, one short
    transaction per batch; returns how many jobs went."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    total = 0
    while True:
        with conn.transaction():
            pruned = statements.prune_batch(
                conn, older_than_seconds=older_than_seconds, batch_size=batch_size
            )
        total += pruned
        if progress is not None and pruned:
            progress(total)
        if pruned < batch_size:
            return total


PRUNE_TURN_SECONDS = 60.0  # a pruner that dies gives its turn back this soon


def prune_exclusive(
    conn: psycopg.Connection[Any],
    older_than_seconds: float,
    *,
    batch_size: int = 1000,
    progress: Any = None,
    holder: str | None = None,
    turn_seconds: float = PRUNE_TURN_SECONDS,
) -> int | None:
    """:func:`prune`, unless another pruner has the turn (then None).

    The turn is a row of ``pgjobs.maintenance_leases`` (only pgjobs_worker may
    write it), renewed before each batch and given back at the end; a pruner
    that dies loses it after ``turn_seconds``. ``conn`` must be in autocommit
    mode: each batch is a short transaction of its own.
    """
    holder = holder or f"{socket.gethostname()}/{os.getpid()}"
    if not statements.lease_take(conn, duty="prune", holder=holder, seconds=turn_seconds):
        return None
    total = 0
    try:
        while True:
            with conn.transaction():
                pruned = statements.prune_batch(
                    conn, older_than_seconds=older_than_seconds, batch_size=batch_size
                )
            total += pruned
            if progress is not None and pruned:
                progress(total)
            if pruned < batch_size:
                return total
            # The turn lasts while the batches go on; lost (this process stalled
            # past it and another pruner took over), the rest is the other's.
            if not statements.lease_take(conn, duty="prune", holder=holder, seconds=turn_seconds):
                return total
    finally:
        # Best effort: a pruner whose connection broke loses the turn by expiry.
        with contextlib.suppress(psycopg.Error):
            statements.lease_release(conn, duties=["prune"], holder=holder)
