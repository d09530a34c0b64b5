"""Retention: finished jobs and their history go, in short batches."""

from __future__ import annotations

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


def prune_exclusive(
    conn: psycopg.Connection[Any],
    older_than_seconds: float,
    *,
    batch_size: int = 1000,
    progress: Any = None,
) -> int | None:
    """:func:`prune`, unless another session is pruning already (then None).

    ``conn`` must be in autocommit mode: the advisory lock is the session's,
    held across the batches' transactions, so that two workers started the same
    day do not delete side by side.
    """
    if not statements.prune_lock_try(conn):
        return None
    try:
        return prune(conn, older_than_seconds, batch_size=batch_size, progress=progress)
    finally:
        if not conn.closed:
            statements.prune_unlock(conn)
