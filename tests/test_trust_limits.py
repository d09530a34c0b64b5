"""Every input limit is the database's.

A tenant (a login in pgjobs_app) writes each poison value through every path
plain SQL offers: INSERT, INSERT ... SELECT (whose values may arrive
compressed), COPY, pgjobs.enqueue and pgjobs.enqueue_jobs. Each is refused by
the database with a clear PJ001 error, nothing is written, and another
organization's jobs drain meanwhile on a real worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

import pgjobs
import tests.support.handlers  # noqa: F401 - registers t.noop, which the worker runs
from tests.support.workers import workers
from tests.test_security import Roles, as_user, roles  # noqa: F401 - fixture

ORG = "org-A"
VICTIM = "org-B"
TYPE = "a.type"
COLUMN_TYPES = {
    "job_type": "text",
    "queue": "text",
    "dedup_key": "text",
    "payload": "jsonb",
    "run_at": "timestamptz",
    "timeout_seconds": "int",
    "max_attempts": "int",
    "priority": "smallint",
}


@dataclass(frozen=True)
class Poison:
    values: dict[str, str]  # column -> value, as text
    message: str  # part of the database's error message
    scope: str = ORG  # the organization the tenant's transaction is scoped to
    json_values: dict[str, Any] = field(default_factory=dict)  # for enqueue_jobs


def _nested(depth: int) -> str:
    return '{"x":' + "[" * depth + "]" * depth + "}"


POISONS: dict[str, Poison] = {
    "organization of 8000 characters": Poison({}, "organization must be", scope="o" * 8000),
    "organization with control characters": Poison({}, "organization must be", scope="org\x1b[2J"),
    "job_type of 8000 characters": Poison({"job_type": "t" * 8000}, "unknown job type"),
    "queue of 8000 characters": Poison({"queue": "q" * 8000}, "queue must be"),
    "dedup_key of 8000 characters": Poison({"dedup_key": "k" * 8000}, "dedup_key must be"),
    "a 5000-digit number": Poison(
        {"payload": '{"n": 1' + "0" * 4999 + "}"}, "300 or more integer digits"
    ),
    "payload nested 5000 deep": Poison({"payload": _nested(5000)}, "nested deeper than 32"),
    "3 MB payload that compresses well": Poison(
        {"payload": json.dumps({"x": "a" * 3_000_000})}, "bytes uncompressed"
    ),
    "timeout_seconds 3000000": Poison({"timeout_seconds": "3000000"}, "timeout_seconds must be"),
    "run_at infinity": Poison({"run_at": "infinity"}, "run_at must be a finite time"),
    "run_at -infinity": Poison({"run_at": "-infinity"}, "run_at must be a finite time"),
    "run_at in the year 20000": Poison(
        {"run_at": "20000-01-01 00:00+00"}, "run_at must be a finite time"
    ),
    "max_attempts 0": Poison({"max_attempts": "0"}, "max_attempts must be"),
    "max_attempts 2147483647": Poison({"max_attempts": "2147483647"}, "max_attempts must be"),
    "priority 4": Poison({"priority": "4"}, "priority must be"),
    "priority -1": Poison({"priority": "-1"}, "priority must be"),
}


def _columns(poison: Poison) -> dict[str, str]:
    return {"job_type": TYPE, **poison.values}


def _casts(cols: dict[str, str]) -> pgsql.Composable:
    return pgsql.SQL(", ").join(
        pgsql.SQL("%s::{}").format(pgsql.SQL(COLUMN_TYPES[c])) for c in cols
    )


def _names(cols: dict[str, str]) -> pgsql.Composable:
    return pgsql.SQL(", ").join(pgsql.Identifier(c) for c in cols)


def _insert(conn: psycopg.Connection[Any], poison: Poison) -> None:
    cols = _columns(poison)
    conn.execute(
        pgsql.SQL("insert into pgjobs.jobs ({}) values ({})").format(_names(cols), _casts(cols)),
        list(cols.values()),
    )


def _insert_select(conn: psycopg.Connection[Any], poison: Poison) -> None:
    # Stored first, so a large value arrives compressed (TOAST) at the insert.
    cols = _columns(poison)
    conn.execute(
        pgsql.SQL("create temp table src on commit drop as select {}").format(
            pgsql.SQL(", ").join(
                pgsql.SQL("%s::{} as {}").format(pgsql.SQL(COLUMN_TYPES[c]), pgsql.Identifier(c))
                for c in cols
            )
        ),
        list(cols.values()),
    )
    conn.execute(
        pgsql.SQL("insert into pgjobs.jobs ({0}) select {0} from src").format(_names(cols))
    )


def _copy(conn: psycopg.Connection[Any], poison: Poison) -> None:
    cols = _columns(poison)
    with conn.cursor().copy(
        pgsql.SQL("copy pgjobs.jobs ({}) from stdin").format(_names(cols))
    ) as copy:
        copy.write_row(list(cols.values()))


def _enqueue(conn: psycopg.Connection[Any], poison: Poison) -> None:
    cols = _columns(poison)
    args = pgsql.SQL(", ").join(
        pgsql.SQL("{} => %s::{}").format(pgsql.Identifier(c), pgsql.SQL(COLUMN_TYPES[c]))
        for c in cols
    )
    conn.execute(pgsql.SQL("select pgjobs.enqueue({})").format(args), list(cols.values()))


def _enqueue_jobs(conn: psycopg.Connection[Any], poison: Poison) -> None:
    cols = _columns(poison)
    element = ", ".join(
        f'"{c}": {v if COLUMN_TYPES[c] != "text" and c != "run_at" else json.dumps(v)}'
        for c, v in cols.items()
    )
    conn.execute("select * from pgjobs.enqueue_jobs(%s::jsonb)", (f"[{{{element}}}]",))


PATHS: dict[str, Callable[[psycopg.Connection[Any], Poison], None]] = {
    "insert": _insert,
    "insert select": _insert_select,
    "copy": _copy,
    "enqueue": _enqueue,
    "enqueue_jobs": _enqueue_jobs,
}


def _attackers_jobs(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "select count(*) from pgjobs.jobs where organization is distinct from %s", (VICTIM,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _attack(app: psycopg.Connection[Any], name: str) -> list[str]:
    """Every path with one poison, as the tenant; returns the paths that got in."""
    poison = POISONS[name]
    accepted = []
    for path, write in PATHS.items():
        try:
            with app.transaction():
                app.execute("select set_config('pgjobs.organization', %s, true)", (poison.scope,))
                write(app, poison)
            accepted.append(path)
        except psycopg.errors.FeatureNotSupported as exc:
            # Postgres refuses COPY FROM to every role row-level security binds
            # (test_copy_by_a_role_rls_does_not_bind_meets_every_limit).
            assert path == "copy", f"{name} via {path}: {exc}"
        except psycopg.Error as exc:
            assert exc.sqlstate == "PJ001", f"{name} via {path}: {exc.sqlstate} {exc}"
            assert poison.message in (exc.diag.message_primary or ""), f"{name} via {path}: {exc}"
    return accepted


@pytest.fixture
def attack_dsn(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "insert into pgjobs.job_types (name, handler) values (%s, 'tests.handlers:noop')",
            (TYPE,),
        )
    return dsn


@pytest.mark.parametrize("name", list(POISONS))
def test_tenant_sql_cannot_store_a_value_past_any_limit(
    attack_dsn: str,
    roles: Roles,  # noqa: F811
    name: str,
) -> None:
    with psycopg.connect(as_user(attack_dsn, roles.app), autocommit=True) as app:
        assert _attack(app, name) == []
    assert _attackers_jobs(attack_dsn) == 0


@pytest.mark.parametrize("name", list(POISONS))
def test_copy_by_a_role_rls_does_not_bind_meets_every_limit(attack_dsn: str, name: str) -> None:
    poison = POISONS[name]
    with psycopg.connect(attack_dsn) as conn:
        conn.execute("select set_config('pgjobs.organization', %s, false)", (poison.scope,))
        with pytest.raises(psycopg.Error) as caught:
            _copy(conn, poison)
        conn.rollback()
    assert caught.value.sqlstate == "PJ001", caught.value
    assert poison.message in (caught.value.diag.message_primary or "")
    assert _attackers_jobs(attack_dsn) == 0


def test_a_tenants_poison_stalls_no_other_organization(
    attack_dsn: str,
    roles: Roles,  # noqa: F811
    wait_for: Callable[..., object],
) -> None:
    """A real worker (as a pgjobs_worker login) drains org-B's jobs while
    org-A's tenant tries every poison through every path."""
    with psycopg.connect(attack_dsn, autocommit=True) as conn:
        victims = [
            pgjobs.enqueue(conn, "t.noop", {"i": i}, organization=VICTIM).id for i in range(30)
        ]
    with workers(as_user(attack_dsn, roles.worker)) as pool:
        worker = pool.start_args(
            "--import", "tests.support.handlers", "--queues", "default", "--processes", "1"
        )
        with psycopg.connect(as_user(attack_dsn, roles.app), autocommit=True) as app:
            for name in POISONS:
                assert _attack(app, name) == [], name
        with psycopg.connect(attack_dsn, autocommit=True) as conn:

            def drained() -> bool:
                row = conn.execute(
                    "select count(*) from pgjobs.jobs where id = any(%s) and state = 'completed'",
                    (victims,),
                ).fetchone()
                return row is not None and row[0] == len(victims)

            wait_for(drained, timeout=60, message="org-B's jobs did not drain")
        assert worker.proc.poll() is None, worker.output()[-4000:]
    assert _attackers_jobs(attack_dsn) == 0


def test_roles_that_may_update_jobs_meet_the_same_limits(attack_dsn: str) -> None:
    """A worker or admin UPDATE (the roles that still may) is held by the
    jobs table's CHECK constraint and the payload guard."""
    with psycopg.connect(attack_dsn, autocommit=True) as conn:
        job = pgjobs.enqueue(conn, TYPE, organization=ORG).id
        for assignment, value in (
            ("run_at = %s::timestamptz", "infinity"),
            ("timeout_seconds = %s::int", "3000000"),
            ("queue = %s", "q" * 8000),
            ("organization = %s", "o" * 8000),
            ("max_attempts = %s::int", "0"),
            ("organization = %s", "org\x1b[2J"),
        ):
            with pytest.raises(psycopg.Error) as refused:
                conn.execute(f"update pgjobs.jobs set {assignment} where id = %s", (value, job))
            # The CHECK constraint, or the update guard's clear message.
            assert refused.value.sqlstate in ("23514", "PJ001"), refused.value
        for payload, message in (
            (_nested(5000), "nested"),
            ('{"n": 1' + "0" * 4999 + "}", "integer digits"),
        ):
            with pytest.raises(psycopg.Error, match=message):
                conn.execute(
                    "update pgjobs.jobs set payload = %s::jsonb where id = %s", (payload, job)
                )
        row = conn.execute(
            "select run_at < 'infinity', timeout_seconds, payload from pgjobs.jobs where id = %s",
            (job,),
        ).fetchone()
    assert row == (True, 300, {})


def test_job_types_meet_the_limits_whoever_writes_them(attack_dsn: str) -> None:
    with psycopg.connect(attack_dsn, autocommit=True) as conn:
        for column, value in (
            ("name", "n" * 8000),
            ("name", "bell\x07"),
            ("queue", "q" * 201),
            ("timeout_seconds", 3_000_000),
            ("max_attempts", 2_000_000_000),
        ):
            values = {"name": "x.type", "handler": "m:f", column: value}
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(
                    pgsql.SQL("insert into pgjobs.job_types ({}) values ({})").format(
                        _names({k: "" for k in values}),
                        pgsql.SQL(", ").join([pgsql.Placeholder()] * len(values)),
                    ),
                    list(values.values()),
                )
