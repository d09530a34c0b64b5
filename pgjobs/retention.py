"""Retention: finished jobs and their history go, whole partitions of finished
jobs and of history first (constant time each), then the rest in short
batches."""

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
    total = drop_partitions(conn, older_than_seconds, progress=progress)
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


def drop_partitions(
    conn: psycopg.Connection[Any], older_than_seconds: float, *, progress: Any = None
) -> int:
    """Drops the partitions of finished jobs whose whole period is past the
    cutoff, oldest first, one transaction each with the partitions of history
    of the same periods; returns how many jobs went.
    Stops early when one is busy (a lock it would wait for): the batches
    delete its rows instead, or the next run drops it."""
    total = 0
    while True:
        try:
            with conn.transaction():
                dropped = statements.partition_drop_oldest(
                    conn, older_than_seconds=older_than_seconds
                )
        except psycopg.errors.LockNotAvailable:
            return total
        if dropped is None:
            return total
        total += dropped
        if progress is not None and dropped:
            progress(total)


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
    try:
        total = drop_partitions(conn, older_than_seconds, progress=progress)
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
