"""Job ownership: created_by, the actor on history rows, and
a job type's cancel policy, enforced by pgjobs.cancel itself, so SQL, Python,
the CLI and HTTP refuse alike. Tenant sessions connect as a login role granted
pgjobs_app, as an application does."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs import registry
from pgjobs.errors import AccessDenied, InvalidJob
from tests.support.web import ROOT, Logins, as_user, header_hooks, logins, test_client  # noqa: F401

OWNED, OPEN = "own.creator_only", "own.anyone"


def setup_types(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "insert into pgjobs.job_types (name, handler, queue, cancel_policy) values"
            " (%s, 'tests.support.handlers:noop', 'own', 'creator'),"
            " (%s, 'tests.support.handlers:noop', 'own', 'organization')",
            (OWNED, OPEN),
        )


def enqueue_as(app_dsn: str, job_type: str, actor: str | None, org: str = "org-A") -> int:
    with psycopg.connect(app_dsn) as conn, pgjobs.tenant(conn, org, actor=actor):
        return pgjobs.enqueue(conn, job_type, organization=org).id


def row(dsn: str, job_id: int) -> dict[str, Any]:
    with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row) as conn:
        found = conn.execute(
            "select state, created_by, canceled_by from pgjobs.jobs where id = %s", (job_id,)
        ).fetchone()
    assert found is not None
    return found


def history_actors(dsn: str, job_id: int) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select to_state, actor from pgjobs.job_events where job_id = %s order by id",
            (job_id,),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


@pytest.fixture
def app_dsn(dsn: str, logins: Logins) -> str:  # noqa: F811
    setup_types(dsn)
    return as_user(dsn, logins.app)


def test_jobs_record_their_creator_and_history_rows_their_actor(dsn: str, app_dsn: str) -> None:
    job = enqueue_as(app_dsn, OPEN, "alice")
    nobody = enqueue_as(app_dsn, OPEN, None)
    with psycopg.connect(app_dsn) as conn, pgjobs.tenant(conn, "org-A", actor="bob"):
        assert pgjobs.get(conn, job)["created_by"] == "alice"
        pgjobs.cancel(conn, job)
        assert pgjobs.history(conn, job)[-1]["actor"] == "bob"
    assert row(dsn, job) == {"state": "canceled", "created_by": "alice", "canceled_by": "bob"}
    assert history_actors(dsn, job) == [("canceled", "bob")]
    # No actor named: the login role is the actor.
    assert row(dsn, nobody)["created_by"] == as_user_name(app_dsn)


def as_user_name(dsn: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(dsn)["user"])


def test_sql_cancel_of_a_creator_only_job_by_another_member_is_refused(
    dsn: str, app_dsn: str
) -> None:
    job = enqueue_as(app_dsn, OWNED, "alice")
    with psycopg.connect(app_dsn) as conn:
        conn.execute("select set_config('pgjobs.organization', 'org-A', false)")
        conn.execute("select set_config('pgjobs.actor', 'bob', false)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="creator"):
            conn.execute("select pgjobs.cancel(%s)", (job,))
        conn.rollback()
        assert row(dsn, job)["state"] == "queued"
        conn.execute("select set_config('pgjobs.organization', 'org-A', false)")
        conn.execute("select set_config('pgjobs.actor', 'alice', false)")
        got = conn.execute("select pgjobs.cancel(%s)", (job,)).fetchone()
        conn.commit()
    assert got == ("canceled",)
    assert row(dsn, job) == {"state": "canceled", "created_by": "alice", "canceled_by": "alice"}


def test_python_cancel_follows_the_policy_and_admins_may_always(
    dsn: str,
    app_dsn: str,
    logins: Logins,  # noqa: F811
) -> None:
    owned, owned2, anyones = (enqueue_as(app_dsn, t, "alice") for t in (OWNED, OWNED, OPEN))
    with psycopg.connect(app_dsn) as conn:
        # tenant() joins the caller's transaction: each attempt gets its own.
        with (
            pytest.raises(AccessDenied),
            conn.transaction(),
            pgjobs.tenant(conn, "org-A", actor="bob"),
        ):
            pgjobs.cancel(conn, owned)
        with conn.transaction(), pgjobs.tenant(conn, "org-A", actor="bob"):
            assert pgjobs.cancel(conn, anyones) == "canceled"  # the default: any member
        with conn.transaction(), pgjobs.tenant(conn, "org-A", actor="alice"):
            assert pgjobs.cancel(conn, owned) == "canceled"
    with psycopg.connect(as_user(dsn, logins.admin)) as conn:
        pgjobs.tenancy.set_actor(conn, "operator-carol")
        assert pgjobs.cancel(conn, owned2) == "canceled"
        conn.commit()
    assert row(dsn, owned2)["canceled_by"] == "operator-carol"
    assert row(dsn, anyones)["canceled_by"] == "bob"


def test_another_organization_still_gets_not_found_not_denied(app_dsn: str) -> None:
    job = enqueue_as(app_dsn, OWNED, "alice", org="org-B")
    with (
        psycopg.connect(app_dsn) as conn,
        pgjobs.tenant(conn, "org-A", actor="alice"),
        pytest.raises(pgjobs.JobNotFound),
    ):
        pgjobs.cancel(conn, job)


def test_cli_cancel_checks_the_actor(dsn: str, app_dsn: str) -> None:
    job = enqueue_as(app_dsn, OWNED, "alice")

    def cancel(actor: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pgjobs.cli",
                "cancel",
                str(job),
                "--org",
                "org-A",
                "--actor",
                actor,
                "--dsn",
                app_dsn,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    refused = cancel("bob")
    assert refused.returncode == 1, refused.stderr
    assert "creator" in refused.stderr
    assert row(dsn, job)["state"] == "queued"
    done = cancel("alice")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "canceled"


def test_http_cancel_checks_the_actor(dsn: str, app_dsn: str) -> None:
    from pgjobs.web import create_app

    job = enqueue_as(app_dsn, OWNED, "alice")
    app = create_app(app_dsn, allow_actions=True, **header_hooks())
    with test_client(app) as client:
        bob = client.post(f"/api/jobs/{job}/cancel", headers={"x-org": "org-A", "x-user": "bob"})
        assert bob.status_code == 403
        assert bob.json()["type"] == "denied"
        assert row(dsn, job)["state"] == "queued"
        alice = {"x-org": "org-A", "x-user": "alice"}
        ok = client.post(f"/api/jobs/{job}/cancel", headers=alice)
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"id": job, "state": "canceled"}
    assert row(dsn, job)["canceled_by"] == "alice"


def test_http_enqueue_records_the_actor_as_creator(dsn: str, app_dsn: str) -> None:
    from pgjobs.web import create_app

    app = create_app(app_dsn, allow_actions=True, **header_hooks())
    with test_client(app) as client:
        made = client.post(
            "/api/jobs", json={"job_type": OWNED}, headers={"x-org": "org-A", "x-user": "dora"}
        )
    assert made.status_code == 201, made.text
    assert row(dsn, made.json()["id"])["created_by"] == "dora"


def test_a_job_type_declares_its_cancel_policy(conn: psycopg.Connection[Any]) -> None:
    spec = registry.JobType(
        name="own.declared", handler="tests.support.handlers:noop", cancel_policy="creator"
    )
    registry.upsert(conn, spec)
    got = conn.execute(
        "select cancel_policy from pgjobs.job_types where name = 'own.declared'"
    ).fetchone()
    assert got is not None and next(iter(got.values())) == "creator"
    with pytest.raises(InvalidJob, match="cancel_policy"):
        registry.upsert(
            conn,
            registry.JobType(
                name="own.bad", handler="tests.support.handlers:noop", cancel_policy="everyone"
            ),
        )
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "insert into pgjobs.job_types (name, handler, cancel_policy)"
            " values ('own.sql', 'tests.support.handlers:noop', 'nobody')"
        )
