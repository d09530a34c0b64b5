"""Shared by the client-contract tests (tenant scope, ORMs, SQL from other
languages): login roles in each pgjobs role, made for one test module, and a
database of its own holding a job type and a table an application writes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql as pgsql

from tests.support.databases import RUN_PREFIX, databases

JOB_TYPE = "c.noop"


@dataclass(frozen=True)
class Logins:
    app: str  # in pgjobs_app
    worker: str  # in pgjobs_worker
    admin: str  # in pgjobs_admin
    nobody: str  # no grants


@contextlib.contextmanager
def logins(server_dsn: str, tag: str) -> Iterator[Logins]:
    made = Logins(*(f"{RUN_PREFIX}_{tag}_{kind}" for kind in ("app", "worker", "admin", "nobody")))
    groups = ("pgjobs_app", "pgjobs_worker", "pgjobs_admin", None)
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        names = (made.app, made.worker, made.admin, made.nobody)
        for name, group in zip(names, groups, strict=True):
            stmt = pgsql.SQL("create role {} login").format(pgsql.Identifier(name))
            if group:
                stmt += pgsql.SQL(" in role {}").format(pgsql.Identifier(group))
            conn.execute(stmt)
    try:
        yield made
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            for name in (made.app, made.worker, made.admin, made.nobody):
                with contextlib.suppress(psycopg.Error):
                    conn.execute(pgsql.SQL("drop owned by {}").format(pgsql.Identifier(name)))
                    conn.execute(pgsql.SQL("drop role {}").format(pgsql.Identifier(name)))


def as_user(dsn: str, user: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, user=user)


def prepare(dsn: str, who: Logins) -> None:
    """A job type, and ``notes``: the application's own table, written in the
    same transaction as an enqueue."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "insert into pgjobs.job_types (name, handler) "
            "values (%s, 'tests.support.handlers:noop') "
            "on conflict (name) do nothing",
            (JOB_TYPE,),
        )
        conn.execute("create table if not exists notes (id serial primary key, body text)")
        for role in (who.app, who.admin, who.worker):
            conn.execute(
                pgsql.SQL("grant select, insert on notes to {}").format(pgsql.Identifier(role))
            )
            conn.execute(
                pgsql.SQL("grant usage on sequence notes_id_seq to {}").format(
                    pgsql.Identifier(role)
                )
            )


def count(dsn: str, query: str, *params: object) -> int:
    """A count read as the superuser, whom row-level security does not bind."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query.encode(), params).fetchone()
    assert row is not None
    return int(row[0])


def jobs_with(dsn: str, marker: str) -> int:
    return count(dsn, "select count(*) from pgjobs.jobs where payload->>'marker' = %s", marker)


def notes_with(dsn: str, marker: str) -> int:
    return count(dsn, "select count(*) from notes where body = %s", marker)


@contextlib.contextmanager
def database(server_dsn: str, template: str, tag: str) -> Iterator[str]:
    """A migrated database for a whole module (the conftest's ``dsn`` is per test)."""
    with databases.database(server_dsn, tag, template=template) as dsn:
        yield dsn
