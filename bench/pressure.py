"""What other clients do to a queue's database while it works: a transaction
left open, and sessions counting the jobs table in
REPEATABLE READ. Both hold back the xmin horizon, so no dead row version
younger than their snapshot can be removed while they last.

Their sessions name themselves ``APPLICATION_NAME``, so that a sustained run
can tell their server CPU from the queue's (measure._Meter)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import psycopg

APPLICATION_NAME = "bench-pressure"


@contextlib.contextmanager
def idle_in_transaction(dsn: str) -> Iterator[None]:
    """A session that took a transaction id and then sits idle in it."""
    with psycopg.connect(dsn, application_name=APPLICATION_NAME) as conn:
        conn.execute("select pg_current_xact_id()")
        try:
            yield
        finally:
            conn.rollback()


@contextlib.contextmanager
def count_loops(dsn: str, table: str, sessions: int = 4) -> Iterator[None]:
    """``sessions`` threads, each looping ``select count(*)`` over ``table``
    in its own REPEATABLE READ transaction."""
    stop = threading.Event()
    statement = f"select count(*) from {table}"  # a fixed table name of the harness

    def loop() -> None:
        with psycopg.connect(dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
            while not stop.is_set():
                with conn.transaction():
                    conn.execute("set transaction isolation level repeatable read")
                    conn.execute(statement)  # type: ignore[call-overload]

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(sessions)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join()


def pressure(name: str, dsn: str, table: str) -> contextlib.AbstractContextManager[Any]:
    """The pressure of one phase of the sustained run, by name."""
    if name == "idle_in_transaction":
        return idle_in_transaction(dsn)
    if name == "repeatable_read_counts":
        return count_loops(dsn, table)
    return contextlib.nullcontext()
