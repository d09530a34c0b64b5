"""Retention: finished jobs and their history go, in short batches."""

from __future__ import annotations

from typing import Any

import psycopg

from pgjobs import sql


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
            rows = conn.execute(
                sql.query("job_prune_batch"),
                {"older_than_seconds": older_than_seconds, "batch_size": batch_size},
            ).fetchall()
        total += len(rows)
        if progress is not None and rows:
            progress(total)
        if len(rows) < batch_size:
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
    row = conn.execute(sql.query("prune_lock_try")).fetchone()
    if row is None or not row[0]:
        return None
    try:
        return prune(conn, older_than_seconds, batch_size=batch_size, progress=progress)
    finally:
        if not conn.closed:
            conn.execute(sql.query("prune_unlock"))
