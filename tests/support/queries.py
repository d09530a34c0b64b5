"""Query helpers for tests: read a value or rows on a connection of their own,
wait for a condition with a deadline, and drive jobs through the worker's own
statements (the test is the worker)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

from pgjobs.statements import Completed, Failed, Lease
from pgjobs.statements.claim import claim
from pgjobs.statements.outcomes import complete_many, fail_many

T = TypeVar("T")


def scalar(dsn: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def rows(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "",
) -> T:
    """Polls until the predicate returns something truthy (and returns it) or
    fails the test: tests wait for a condition with a deadline, never for a
    fixed time, which is either too short on a loaded machine or wasted."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"not true within {timeout}s: {predicate!r}")
        time.sleep(interval)


def holds_for(predicate: Callable[[], bool], seconds: float, interval: float = 0.05) -> bool:
    """True if ``predicate`` stays true for ``seconds``: how a test shows that
    something has stopped (a counter no longer grows), as opposed to waiting
    for something to happen, which is what wait_for is for."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(interval)
    return bool(predicate())


def claim_tokens(
    conn: psycopg.Connection[Any],
    queues: Sequence[str],
    *,
    worker: str = "test/1",
    n: int = 10,
    lease_seconds: float = 60,
    now: dt.datetime | None = None,
) -> dict[int, int]:
    """The worker's claim: the lease token of each job claimed, by job id."""
    jobs = claim(conn, worker=worker, queues=queues, n=n, lease_seconds=lease_seconds, now=now)
    return {job.id: job.lease_token for job in jobs}


def complete(
    conn: psycopg.Connection[Any], job_id: int, token: int, result: str | None = None
) -> list[Any]:
    """The worker's completion of one attempt: the rows (id, state) it moved."""
    return complete_many(conn, [(Lease(job_id, token), Completed(result, 1.0))])


def fail(
    conn: psycopg.Connection[Any],
    job_id: int,
    token: int,
    outcome: Failed,
    now: dt.datetime | None = None,
) -> list[Any]:
    """The worker's failure of one attempt: the rows (id, state, run_at) it moved."""
    return fail_many(conn, [(Lease(job_id, token), outcome)], now=now)
