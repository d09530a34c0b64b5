"""Test databases: one template migrated per run, cloned for each test that needs
commits, and a shared clone where each test runs in a rolled-back transaction.

Names carry the pid and a random part, so runs in parallel (two checkouts, CI
beside a developer) never touch each other's databases, and every database a
run creates is dropped when it ends, failed tests and ^C included.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import secrets
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg
import pytest
from psycopg.rows import DictRow, dict_row

from pgjobs import db

T = TypeVar("T")

RUN_PREFIX = f"pgjobs_test_{os.getpid()}_{secrets.token_hex(3)}"
_serial = itertools.count(1)


class _Databases:
    """Every database this run created, so that a finalizer that never ran (an
    interrupted session, a crashed fixture) still leaves nothing behind."""

    def __init__(self) -> None:
        self.admin_dsn: str | None = None
        self.names: list[str] = []

    def create(self, admin_dsn: str, name: str, template: str | None = None) -> str:
        self.admin_dsn = admin_dsn
        # Recorded first: a create interrupted half-way is dropped too (IF EXISTS).
        self.names.append(name)
        db.create_database(admin_dsn, name, template=template)
        return db.with_dbname(admin_dsn, name)

    def drop(self, name: str) -> None:
        assert self.admin_dsn is not None
        db.drop_database(self.admin_dsn, name)
        self.names.remove(name)

    def drop_all(self) -> None:
        for name in reversed(list(self.names)):
            # The server may be gone at exit; then there is nothing left to clean.
            with contextlib.suppress(psycopg.Error):
                self.drop(name)


_databases = _Databases()
atexit.register(_databases.drop_all)


@pytest.fixture(scope="session")
def server_dsn() -> str:
    """Admin DSN of the server under test (see ``pgjobs.db.test_server_dsn``)."""
    return db.test_server_dsn()


@pytest.fixture(scope="session")
def template_db(server_dsn: str) -> Iterator[str]:
    """Name of a database migrated once for the whole run; clones are file copies."""
    # Imported here, not at the top, so this file loads (and tests that need no
    # schema run) whatever state the migration code is in.
    from pgjobs.migrate import migrate

    name = f"{RUN_PREFIX}_tpl"
    template_dsn = _databases.create(server_dsn, name)
    # Closed before any clone is made: CREATE DATABASE ... TEMPLATE refuses a
    # template that has sessions.
    with psycopg.connect(template_dsn, autocommit=True) as conn:
        migrate(conn)
    yield name
    _databases.drop(name)


@pytest.fixture(scope="session")
def shared_dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """DSN of the migrated database behind ``conn``; tests never commit to it."""
    name = f"{RUN_PREFIX}_shared"
    dsn = _databases.create(server_dsn, name, template=template_db)
    yield dsn
    _databases.drop(name)


@pytest.fixture
def dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """DSN of a migrated database of this test's own, for tests that commit,
    LISTEN or run several processes. Dropped afterwards, connections and all."""
    name = f"{RUN_PREFIX}_{next(_serial)}"
    dsn = _databases.create(server_dsn, name, template=template_db)
    yield dsn
    _databases.drop(name)


@pytest.fixture
def conn(shared_dsn: str) -> Iterator[psycopg.Connection[DictRow]]:
    """A connection inside a transaction that is rolled back after the test.

    ``conn.transaction()`` in a test is a savepoint, and ``conn.commit()`` fails
    the test: it would leak rows into the database every other test shares (and
    pgjobs must never commit a caller's transaction anyway).
    """
    connection = psycopg.connect(shared_dsn, row_factory=dict_row, autocommit=False)

    def refuse_commit() -> None:
        raise AssertionError(
            "commit() on the `conn` fixture: its transaction is rolled back after each "
            "test; a test that needs commits takes the `dsn` fixture"
        )

    connection.execute("SELECT 1")  # opens the transaction everything else nests in
    connection.commit = refuse_commit  # type: ignore[method-assign]
    try:
        yield connection
    finally:
        connection.rollback()
        connection.close()


def _wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "",
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"not true within {timeout}s: {predicate!r}")
        time.sleep(interval)


@pytest.fixture
def wait_for() -> Callable[..., object]:
    """``wait_for(predicate, timeout=10.0, interval=0.02, message="")``: poll until
    the predicate returns something truthy (and return it) or fail the test.

    Tests wait for a condition with a deadline, never for a fixed time: a sleep
    is either too short on a loaded machine or wasted on an idle one.
    """
    return _wait_for
