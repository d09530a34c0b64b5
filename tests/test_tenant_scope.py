"""pgjobs.tenant(): a scope for the caller's own transaction, never a
transaction of its own, and the previous scope back when the block ends."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs.errors import InvalidJob
from tests.support import client_handlers
from tests.support.clients import JOB_TYPE, Logins, as_user, jobs_with, logins, prepare

ROOT = Path(__file__).resolve().parent.parent
IN_TRANSACTION = psycopg.pq.TransactionStatus.INTRANS


@pytest.fixture(scope="module")
def who(server_dsn: str, template_db: str) -> Iterator[Logins]:
    with logins(server_dsn, "scope") as made:
        yield made


@pytest.fixture
def app_dsn(dsn: str, who: Logins) -> str:
    prepare(dsn, who)
    return as_user(dsn, who.app)


def scope(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute("select pgjobs.current_organization()").fetchone()
    assert row is not None
    return row[0]


def began(conn: psycopg.Connection[Any]) -> Any:
    row = conn.execute("select now()").fetchone()
    assert row is not None
    return row[0]


def test_nested_blocks_each_restore_the_scope_they_found(app_dsn: str) -> None:
    with psycopg.connect(app_dsn) as conn:
        start = began(conn)
        with pgjobs.tenant(conn, "org-A"):
            assert scope(conn) == "org-A"
            with pgjobs.tenant(conn, "org-B"):
                assert scope(conn) == "org-B"
                with pgjobs.tenant(conn, "org-B"):
                    assert scope(conn) == "org-B"
                assert scope(conn) == "org-B"
            assert scope(conn) == "org-A"
            pgjobs.enqueue(conn, JOB_TYPE, {"marker": "nested"})
        assert scope(conn) is None
        # All of it in the one transaction the first statement began.
        assert began(conn) == start
        assert conn.info.transaction_status == IN_TRANSACTION
        rows = conn.execute(
            "select organization from pgjobs.jobs where payload->>'marker' = 'nested'"
        ).fetchall()
        assert rows == []  # unscoped again: the app role sees nothing
        conn.rollback()


@pytest.mark.parametrize("end", ["rollback", "commit"])
def test_tenant_as_the_first_statement_joins_the_callers_transaction(
    dsn: str, app_dsn: str, end: str
) -> None:
    marker = f"first-{end}"
    with psycopg.connect(app_dsn) as conn:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with pgjobs.tenant(conn, "org-A"):
            pgjobs.enqueue(conn, JOB_TYPE, {"marker": marker})
        # The block ended; the transaction did not.
        assert conn.info.transaction_status == IN_TRANSACTION
        assert jobs_with(dsn, marker) == 0  # not committed: no other session sees it
        getattr(conn, end)()
    assert jobs_with(dsn, marker) == (1 if end == "commit" else 0)


def test_tenant_inside_an_explicit_transaction_is_undone_with_it(dsn: str, app_dsn: str) -> None:
    class Undo(Exception):
        pass

    with psycopg.connect(app_dsn, autocommit=True) as conn:
        with pytest.raises(Undo), conn.transaction():
            with pgjobs.tenant(conn, "org-A"):
                pgjobs.enqueue(conn, JOB_TYPE, {"marker": "explicit"})
            raise Undo
        assert jobs_with(dsn, "explicit") == 0
        with conn.transaction(), pgjobs.tenant(conn, "org-A"):
            pgjobs.enqueue(conn, JOB_TYPE, {"marker": "explicit"})
    assert jobs_with(dsn, "explicit") == 1


def test_tenant_on_an_autocommit_connection_is_refused(dsn: str, app_dsn: str) -> None:
    """No transaction, nothing to scope: the scope would end with the
    set_config statement itself and the block would run unscoped."""
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        with pytest.raises(InvalidJob, match="autocommit"), pgjobs.tenant(conn, "org-A"):
            pytest.fail("the block ran")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert scope(conn) is None
    assert jobs_with(dsn, "autocommit") == 0


@pytest.mark.parametrize("organization", ["", None, 7])
def test_tenant_needs_an_organization(app_dsn: str, organization: Any) -> None:
    with psycopg.connect(app_dsn) as conn:
        with pytest.raises(InvalidJob), pgjobs.tenant(conn, organization):
            pytest.fail("the block ran")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_failed_statement_in_the_block_surfaces_as_itself(app_dsn: str) -> None:
    """The block's own error comes out, not one from restoring the scope in
    an aborted transaction; the caller's rollback ends the scope."""
    with psycopg.connect(app_dsn) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero), pgjobs.tenant(conn, "org-A"):
            conn.execute("select 1 / 0")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.rollback()
        assert scope(conn) is None


def test_a_commit_inside_the_block_leaves_nothing_to_restore(app_dsn: str) -> None:
    """Restoring is for the transaction the scope was found in: after a commit
    inside, the outer scope (org-B) must not come back into the next one."""
    with psycopg.connect(app_dsn) as conn:
        with pgjobs.tenant(conn, "org-B"), pgjobs.tenant(conn, "org-A"):
            conn.commit()
            assert scope(conn) is None  # a new transaction, unscoped
        assert scope(conn) is None
        conn.rollback()


def test_an_admins_nested_block_restores_its_view_of_every_organization(
    dsn: str, app_dsn: str, who: Logins
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for org in ("org-A", "org-B"):
            pgjobs.enqueue(conn, JOB_TYPE, {"marker": "admin"}, organization=org)

    def seen(conn: psycopg.Connection[Any]) -> set[str]:
        return {r[0] for r in conn.execute("select organization from pgjobs.jobs")}

    with psycopg.connect(as_user(dsn, who.admin)) as admin:
        assert seen(admin) == {"org-A", "org-B"}
        with pgjobs.tenant(admin, "org-A"):
            assert seen(admin) == {"org-A"}
            with pgjobs.tenant(admin, "org-B"):
                assert seen(admin) == {"org-B"}
            assert seen(admin) == {"org-A"}
        assert seen(admin) == {"org-A", "org-B"}
        admin.rollback()


@pytest.mark.slow
def test_a_handler_nesting_tenant_keeps_its_jobs_scope(dsn: str, who: Logins) -> None:
    """A real worker (as a pgjobs_worker login): inside the job's transaction,
    tenant(ctx.conn, ctx.organization) and a nested block for another
    organization each hand the scope back; afterwards the job still sees its
    own organization only (unscoped, a worker would see every one)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(client_handlers.TRACE_TABLE)
        conn.execute(f'grant select, insert on scope_trace to "{who.worker}"')
        ids = {
            org: pgjobs.enqueue(conn, "c.nested_scope", {"other": other}, organization=org).id
            for org, other in (("org-A", "org-B"), ("org-B", "org-A"))
        }
    done = subprocess.run(
        [
            sys.executable, "-m", "pgjobs.cli", "worker",
            "--import", "tests.support.client_handlers",
            "--processes", "1", "--exit-when-idle", "--dsn", as_user(dsn, who.worker),
        ],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    with psycopg.connect(dsn) as conn:
        states = dict(
            conn.execute("select organization, state from pgjobs.jobs where id = any(%s)",
                         (list(ids.values()),)).fetchall()
        )  # fmt: skip
        traces = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                "select j.organization, t.steps, t.seen from scope_trace t"
                " join pgjobs.jobs j on j.id = t.job_id"
            )
        }
    assert states == {"org-A": "completed", "org-B": "completed"}
    assert traces == {
        "org-A": (["org-A", "org-A", "org-B", "org-A", "org-A"], ["org-A"]),
        "org-B": (["org-B", "org-B", "org-A", "org-B", "org-B"], ["org-B"]),
    }
