"""Test databases: one template migrated per run, cloned for each test that needs
commits, and a shared clone where each test runs in a rolled-back transaction.
Every database comes from the one factory in ``tests/support/databases.py``,
which drops it whatever happens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg.rows import DictRow, dict_row

from pgjobs import db
from tests.support import queries
from tests.support.databases import databases


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

    template_dsn = databases.create(server_dsn, "tpl")
    name = psycopg.conninfo.conninfo_to_dict(template_dsn)["dbname"]
    # Closed before any clone is made: CREATE DATABASE ... TEMPLATE refuses a
    # template that has sessions.
    with psycopg.connect(template_dsn, autocommit=True) as conn:
        migrate(conn)
    yield str(name)
    databases.drop(str(name))


@pytest.fixture(scope="session")
def shared_dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """DSN of the migrated database behind ``conn``; tests never commit to it."""
    with databases.database(server_dsn, "shared", template=template_db) as dsn:
        yield dsn


@pytest.fixture
def dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """DSN of a migrated database of this test's own, for tests that commit,
    LISTEN or run several processes. Dropped afterwards, connections and all."""
    with databases.database(server_dsn, template=template_db) as dsn:
        yield dsn


@pytest.fixture
def empty_dsn(server_dsn: str) -> Iterator[str]:
    """A database with nothing in it, not even the pgjobs schema."""
    with databases.database(server_dsn) as dsn:
        yield dsn


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


@pytest.fixture
def wait_for() -> Callable[..., object]:
    """``wait_for(predicate, timeout=10.0, interval=0.02, message="")``: see
    :func:`tests.support.queries.wait_for`."""
    return queries.wait_for
