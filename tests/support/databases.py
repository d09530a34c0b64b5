"""The one database factory of the test suite.

Every database a run creates is named after the run (pid and a random part,
so runs in parallel never touch each other's databases), recorded before it
is created, and dropped when its test ends or, failing that, when the run
ends: failed tests, crashed fixtures and ^C included.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import secrets
from collections.abc import Iterator

import psycopg

from pgjobs import db

RUN_PREFIX = f"pgjobs_test_{os.getpid()}_{secrets.token_hex(3)}"


class Databases:
    def __init__(self) -> None:
        self.names: dict[str, str] = {}  # name -> the admin DSN that drops it
        self._serial = itertools.count(1)

    def new_name(self, admin_dsn: str, label: str | None = None) -> str:
        """A name of this run's, recorded so that the run drops it in the end
        even if the code under test is what creates it."""
        name = f"{RUN_PREFIX}_{label or next(self._serial)}"
        self.names[name] = admin_dsn
        return name

    def create(self, admin_dsn: str, label: str | None = None, template: str | None = None) -> str:
        """Creates a database (a clone of ``template``, else empty); its DSN."""
        # Recorded first: a create interrupted half-way is dropped too (IF EXISTS).
        name = self.new_name(admin_dsn, label)
        db.create_database(admin_dsn, name, template=template)
        return db.with_dbname(admin_dsn, name)

    def drop(self, name: str) -> None:
        db.drop_database(self.names[name], name)
        del self.names[name]

    def drop_all(self) -> None:
        for name in reversed(list(self.names)):
            # The server may be gone at exit; then there is nothing left to clean.
            with contextlib.suppress(psycopg.Error):
                self.drop(name)

    @contextlib.contextmanager
    def database(
        self, admin_dsn: str, label: str | None = None, template: str | None = None
    ) -> Iterator[str]:
        """A database for the block, dropped when it ends, connections and all."""
        dsn = self.create(admin_dsn, label, template)
        try:
            yield dsn
        finally:
            self.drop(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])


databases = Databases()
atexit.register(databases.drop_all)
