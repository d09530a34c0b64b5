"""Multi-tenancy: row-level security per organization, roles, hostile input.

Tenant-side sessions connect as login roles made for this run and granted the
pgjobs roles, exactly as an application would (``GRANT pgjobs_app TO ...``);
the test's own setup and checks connect as the superuser, whom RLS never binds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql as pgsql
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

import pgjobs
import tests.support.handlers  # noqa: F401 - registers the job types the workers run
from pgjobs.errors import AccessDenied, InvalidJob, JobNotFound
from pgjobs.statements import Failed
from pgjobs.statements.progress import progress
from tests.support import factories, queries
from tests.support.databases import RUN_PREFIX

ROOT = Path(__file__).resolve().parent.parent
ORGS = ("org-A", "org-B")
STATES = ("waiting", "queued", "running", "retrying", "completed", "dead", "canceled")
SHARED_KEY = "invoice:2026-11"
# Characters no name may hold (pgjobs.name_ok in SQL, pgjobs.limits in Python).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


# -- roles --------------------------------------------------------------------


@dataclass(frozen=True)
class Roles:
    app: str  # a login role in pgjobs_app
    worker: str  # a login role in pgjobs_worker
    admin: str  # a login role in pgjobs_admin
    nobody: str  # a login role with no grants at all


@pytest.fixture(scope="session")
def roles(server_dsn: str) -> Iterator[Roles]:
    made = Roles(*(f"{RUN_PREFIX}_{kind}" for kind in ("app", "worker", "admin", "nobody")))
    grants = {
        made.app: "pgjobs_app",
        made.worker: "pgjobs_worker",
        made.admin: "pgjobs_admin",
        made.nobody: None,
    }
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        # The pgjobs roles exist once any database was migrated (template_db).
        for name, group in grants.items():
            stmt = pgsql.SQL("create role {} login").format(pgsql.Identifier(name))
            if group:
                stmt += pgsql.SQL(" in role {}").format(pgsql.Identifier(group))
            # Other modules import this fixture too (each import is its own
            # session fixture): the second finds the roles made.
            with contextlib.suppress(psycopg.errors.DuplicateObject):
                conn.execute(stmt)
    yield made
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        for name in grants:
            with contextlib.suppress(psycopg.Error):
                conn.execute(pgsql.SQL("drop role {}").format(pgsql.Identifier(name)))


def as_user(dsn: str, user: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, user=user)


# -- a world of two tenants -----------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    org: str
    job_type: str
    queue: str
    ids: dict[str, int]  # one job per state
    keyed: int  # the job holding SHARED_KEY


def _tenant(conn: psycopg.Connection[Any], org: str) -> Tenant:
    letter = org[-1].lower()
    job_type, queue = f"{letter}.type", f"{letter}-queue"
    conn.execute(
        "insert into pgjobs.job_types (name, handler, queue, dedup_window_seconds) "
        "values (%s, 'tests.support.handlers:noop', %s, 3600)",
        (job_type, queue),
    )
    ids = {
        state: factories.make_job(conn, state, job_type=job_type, organization=org)
        for state in STATES
    }
    keyed = pgjobs.enqueue(conn, job_type, organization=org, dedup_key=SHARED_KEY).id
    # History the views aggregate: one completed and one failed attempt.
    conn.execute(
        "insert into pgjobs.job_events (job_id, organization, job_type, attempt, from_state,"
        " to_state, error_class, message, duration_ms) values"
        " (%(id)s, %(org)s, %(type)s, 1, 'running', 'completed', null, null, 5),"
        " (%(id)s, %(org)s, %(type)s, 1, 'running', 'retrying', 'Boom', 'secret', 7)",
        {"id": ids["completed"], "org": org, "type": job_type},
    )
    conn.execute(
        "insert into pgjobs.rate_windows (organization, job_type, window_start, used)"
        " values (%s, %s, now(), 1)",
        (org, job_type),
    )
    return Tenant(org, job_type, queue, ids, keyed)


@dataclass(frozen=True)
class World:
    dsn: str  # superuser
    app_dsn: str
    a: Tenant
    b: Tenant


@pytest.fixture
def world(dsn: str, roles: Roles) -> World:
    with psycopg.connect(dsn) as conn:
        a, b = (_tenant(conn, org) for org in ORGS)
    return World(dsn, as_user(dsn, roles.app), a, b)


def snapshot(dsn: str, org: str) -> list[Any]:
    """Every row of one organization, in every table (as the superuser)."""
    with psycopg.connect(dsn) as conn:
        return [
            conn.execute(
                pgsql.SQL(
                    "select coalesce(jsonb_agg(to_jsonb(t) order by to_jsonb(t)::text), '[]')"
                    " from pgjobs.{} t where organization = %s"
                ).format(pgsql.Identifier(table)),
                (org,),
            ).fetchone()
            for table in ("jobs", "job_events", "dedup_keys", "rate_windows")
        ]


# -- the tenant matrix ----------------------------------------------------------
#
# Each surface is called by a pgjobs_app session scoped to org-A, against one
# tenant's jobs, and answers how many of that tenant's rows it saw or changed.
# Against org-B that must be 0 (or a permission error); against org-A, more.

Surface = Callable[[psycopg.Connection[Any], Tenant], int]

DENIED = (AccessDenied, JobNotFound, InvalidJob, psycopg.errors.InsufficientPrivilege)


def _count(conn: psycopg.Connection[Any], query: str, *params: Any) -> int:
    row = conn.cursor(row_factory=tuple_row).execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def _view(view: str, column: str, attr: str) -> Surface:
    return lambda c, t: _count(
        c, f"select count(*) from pgjobs.{view} where {column} = %s", getattr(t, attr)
    )


def _python_enqueue_dedup(c: psycopg.Connection[Any], t: Tenant) -> int:
    # org-A's own job with the same key: a duplicate of org-A's job only.
    result = pgjobs.enqueue(c, "a.type", dedup_key=SHARED_KEY)
    return int(result.duplicate and result.id == t.keyed)


def _sql_enqueue_dedup(c: psycopg.Connection[Any], t: Tenant) -> int:
    row = c.execute(
        "select id, duplicate from pgjobs.enqueue_job('a.type', dedup_key => %s)", (SHARED_KEY,)
    ).fetchone()
    assert row is not None
    return int(row[1] and row[0] == t.keyed)


SURFACES: dict[str, Surface] = {
    "table jobs": _view("jobs", "organization", "org"),
    "table job_events": _view("job_events", "organization", "org"),
    "table dedup_keys": _view("dedup_keys", "organization", "org"),
    "table rate_windows": _view("rate_windows", "organization", "org"),
    "jobs by id": lambda c, t: _count(
        c, "select count(*) from pgjobs.jobs where id = any(%s)", list(t.ids.values())
    ),
    "view queue_depth": _view("queue_depth", "queue", "queue"),
    "view job_counts": _view("job_counts", "organization", "org"),
    "view processing_times": _view("processing_times", "job_type", "job_type"),
    "view failure_rates": _view("failure_rates", "job_type", "job_type"),
    "view dead_letter": _view("dead_letter", "organization", "org"),
    "sql cancel": lambda c, t: _count(
        c, "select count(*) from pgjobs.cancel(%s) s where s = 'canceled'", t.ids["queued"]
    ),
    "sql retry": lambda c, t: _count(
        c, "select count(*) from pgjobs.retry(%s) s where s = 'queued'", t.ids["dead"]
    ),
    "sql enqueue depends_on": lambda c, t: _count(
        c, "select count(*) from pgjobs.enqueue('a.type', depends_on => %s) e", [t.ids["queued"]]
    ),
    "sql enqueue dedup_key": _sql_enqueue_dedup,
    "sql enqueue organization": lambda c, t: _count(
        c, "select count(*) from pgjobs.enqueue(%s, organization => %s) e", t.job_type, t.org
    ),
    "sql insert organization": lambda c, t: (
        c.execute(
            "insert into pgjobs.jobs (job_type, organization) values (%s, %s)", (t.job_type, t.org)
        ).rowcount
    ),
    "python get": lambda c, t: int(pgjobs.get(c, t.ids["running"])["id"] == t.ids["running"]),
    "python list_jobs": lambda c, t: len(pgjobs.list_jobs(c, organization=t.org)),
    "python list_jobs unfiltered": lambda c, t: sum(
        r["organization"] == t.org for r in pgjobs.list_jobs(c)
    ),
    "python history": lambda c, t: len(pgjobs.history(c, t.ids["completed"])),
    "python metrics": lambda c, t: sum(
        r["organization"] == t.org for r in pgjobs.metrics(c)["job_counts"]
    ),
    "python cancel": lambda c, t: int(pgjobs.cancel(c, t.ids["retrying"]) == "canceled"),
    "python retry": lambda c, t: int(pgjobs.retry(c, t.ids["canceled"]) == "queued"),
    "python enqueue depends_on": lambda c, t: int(
        pgjobs.enqueue(c, "a.type", depends_on=[t.ids["waiting"]]).id > 0
    ),
    "python enqueue dedup_key": _python_enqueue_dedup,
    "python enqueue organization": lambda c, t: int(
        pgjobs.enqueue(c, t.job_type, organization=t.org).id > 0
    ),
}


@pytest.mark.parametrize("surface", list(SURFACES))
def test_tenant_matrix(world: World, surface: str) -> None:
    call = SURFACES[surface]
    with psycopg.connect(world.app_dsn) as app:
        # Against the other tenant: nothing seen, nothing changed (committed,
        # so that a change would be there to find).
        before = snapshot(world.dsn, world.b.org)
        try:
            with pgjobs.tenant(app, world.a.org):
                seen = call(app, world.b)
        except DENIED:
            app.rollback()
            seen = 0
        except psycopg.Error as exc:
            # Raw SQL: "no such job" (PJ002), invalid input (PJ001) or denied.
            assert exc.sqlstate in ("PJ001", "PJ002", "42501"), exc
            app.rollback()
            seen = 0
        app.commit()
        assert seen == 0, f"{surface} reached {world.b.org}"
        assert snapshot(world.dsn, world.b.org) == before

        # Against its own jobs, the same call works.
        with pgjobs.tenant(app, world.a.org):
            assert call(app, world.a) > 0, f"{surface} did not work for the tenant itself"
        app.rollback()


def test_a_job_cannot_take_the_id_of_another_organizations_job(world: World) -> None:
    """Ids are drawn by the database: an INSERT that names an id (here another
    organization's job's) gets a fresh one. Were it kept, the two jobs would
    share an id, and the worker, which finds jobs by id, would start and end
    the other tenant's job with the claim of this one."""
    victim = world.b.ids["queued"]
    before = snapshot(world.dsn, world.b.org)
    with psycopg.connect(world.app_dsn) as app:
        with pgjobs.tenant(app, world.a.org):
            named = _count(
                app,
                "insert into pgjobs.jobs (id, job_type) values (%s, 'a.type') returning id",
                victim,
            )
        app.commit()
    assert named != victim
    with psycopg.connect(world.dsn) as conn:
        assert _count(conn, "select count(*) from pgjobs.jobs where id = %s", victim) == 1
        claimed = conn.execute(
            "select id, organization from pgjobs.claim('w', array['a-queue'], 100, 30)"
        ).fetchall()
        conn.commit()
    assert (named, world.a.org) in claimed
    assert all(org == world.a.org for _, org in claimed)
    assert snapshot(world.dsn, world.b.org) == before


def test_unscoped_app_session_sees_nothing_and_enqueues_nothing(world: World) -> None:
    with psycopg.connect(world.app_dsn) as app:
        for table in ("jobs", "job_events", "dedup_keys", "rate_windows"):
            assert _count(app, f"select count(*) from pgjobs.{table}") == 0, table
        assert pgjobs.list_jobs(app) == []
        with pytest.raises(AccessDenied, match="scoped to no organization"):
            pgjobs.enqueue(app, "a.type")
        app.rollback()
        # Its own SQLSTATE, not 42501: "no organization set" is the caller's setup.
        with pytest.raises(psycopg.Error) as raised:
            app.execute("insert into pgjobs.jobs (job_type) values ('a.type')")
        assert raised.value.sqlstate == "PJ004"
    with psycopg.connect(world.dsn) as conn:
        assert _count(conn, "select count(*) from pgjobs.jobs where organization is null") == 0


def test_app_role_cannot_claim_delete_or_read_workers(world: World) -> None:
    attempts = {
        "claim": "select * from pgjobs.claim('w', array['a-queue'], 10, 30)",
        "delete": "delete from pgjobs.jobs",
        "workers view": "select * from pgjobs.workers",
        "worker table": "select * from pgjobs.worker_processes",
        "job types": "update pgjobs.job_types set enabled = false",
        "lease column": "update pgjobs.jobs set lease_token = 1",
    }
    with psycopg.connect(world.app_dsn) as app:
        for name, statement in attempts.items():
            with pytest.raises(psycopg.errors.InsufficientPrivilege), pgjobs.tenant(app, "org-A"):
                app.execute(statement)
                pytest.fail(f"{name} was allowed")
            app.rollback()


def test_admin_sees_every_organization_until_it_scopes_itself(world: World, roles: Roles) -> None:
    with psycopg.connect(as_user(world.dsn, roles.admin)) as admin:
        orgs = {r[0] for r in admin.execute("select organization from pgjobs.jobs")}
        assert orgs == set(ORGS)
        assert pgjobs.retry(admin, world.b.ids["dead"]) == "queued"
        with pgjobs.tenant(admin, world.a.org):
            assert {r["organization"] for r in pgjobs.list_jobs(admin)} == {world.a.org}
            assert pgjobs.metrics(admin)["workers"] is None
        assert pgjobs.metrics(admin)["workers"] is not None


# -- the CLI, as the application's role ----------------------------------------


def _cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgjobs.cli", *args, "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_cli_commands_with_org_reach_only_that_organization(world: World) -> None:
    a, b = world.a, world.b
    before = snapshot(world.dsn, b.org)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _cli(world.app_dsn, *args, "--org", a.org)

    # Reads: B's jobs are simply not there.
    for command in ("status", "history"):
        assert run(command, str(b.ids["queued"])).returncode == 1, command
        assert run(command, str(a.ids["queued"])).returncode == 0, command
    listed = run("list", "--json", "--limit", "500")
    assert listed.returncode == 0
    assert {json.loads(line)["organization"] for line in listed.stdout.splitlines()} == {a.org}
    dead = run("dead-letter", "--json")
    assert [json.loads(line)["id"] for line in dead.stdout.splitlines()] == [a.ids["dead"]]
    metrics = json.loads(run("metrics", "--format", "json").stdout)
    assert {r["organization"] for r in metrics["job_counts"]} == {a.org}
    assert b.job_type not in run("metrics", "--format", "prometheus").stdout

    # Writes: refused for B, done for A.
    assert run("cancel", str(b.ids["queued"])).returncode == 1
    assert run("retry", str(b.ids["dead"])).returncode == 1
    assert run("enqueue", b.job_type, "--depends-on", str(b.ids["queued"])).returncode != 0
    assert snapshot(world.dsn, b.org) == before
    assert run("cancel", str(a.ids["queued"])).stdout.strip() == "canceled"
    assert run("retry", str(a.ids["dead"])).stdout.strip() == "queued"
    made = run("enqueue", a.job_type, "--depends-on", str(a.ids["queued"]))
    assert made.returncode == 0 and json.loads(made.stdout)["duplicate"] is False


# -- the schema holds the rules -------------------------------------------------


def test_schema_lint(conn: psycopg.Connection[Any]) -> None:
    """Every table with an organization column has RLS forced, every view is
    security_invoker, every SECURITY DEFINER function pins search_path, every
    unique index starts with organization, and no runtime role owns a table or
    bypasses RLS."""
    tables = conn.execute(
        "select c.relname, c.relrowsecurity, c.relforcerowsecurity from pg_class c"
        " join pg_attribute a on a.attrelid = c.oid and a.attname = 'organization'"
        " where c.relnamespace = 'pgjobs'::regnamespace and c.relkind in ('r', 'p')"
    ).fetchall()
    assert {t["relname"] for t in tables} >= {"jobs", "job_events", "dedup_keys", "rate_windows"}
    # and the partitions of jobs (0060), though nobody may read them directly
    assert {t["relname"] for t in tables} >= {"jobs_active", "jobs_finished_default"}
    assert [
        t["relname"] for t in tables if not (t["relrowsecurity"] and t["relforcerowsecurity"])
    ] == []

    views = conn.execute(
        "select relname, coalesce(reloptions, '{}') as options from pg_class"
        " where relnamespace = 'pgjobs'::regnamespace and relkind = 'v'"
    ).fetchall()
    assert len(views) >= 6
    assert [v["relname"] for v in views if "security_invoker=true" not in v["options"]] == []

    definers = conn.execute(
        "select proname, coalesce(proconfig, '{}') as config from pg_proc"
        " where pronamespace = 'pgjobs'::regnamespace and prosecdef"
    ).fetchall()
    assert [
        d["proname"] for d in definers if not any(c.startswith("search_path=") for c in d["config"])
    ] == []

    unique = conn.execute(
        "select i.indexrelid::regclass::text as index, a.attname as first"
        " from pg_index i join pg_class c on c.oid = i.indrelid"
        " join pg_attribute a on a.attrelid = c.oid and a.attnum = i.indkey[0]"
        " where i.indisunique and c.relnamespace = 'pgjobs'::regnamespace"
        "   and exists (select from pg_attribute o where o.attrelid = c.oid"
        "               and o.attname = 'organization' and not o.attisdropped)"
    ).fetchall()
    assert unique, "the dedup key must be a unique index"
    assert [u["index"] for u in unique if u["first"] != "organization"] == []

    runtime = ("pgjobs_app", "pgjobs_worker", "pgjobs_admin")
    owners = conn.execute("select tableowner from pg_tables where schemaname = 'pgjobs'").fetchall()
    assert not {o["tableowner"] for o in owners} & set(runtime)
    bypass = conn.execute(
        "select rolname from pg_roles"
        " where rolname in ('pgjobs_owner', 'pgjobs_app', 'pgjobs_worker', 'pgjobs_admin')"
        " and (rolbypassrls or rolsuper or rolcanlogin)"
    ).fetchall()
    assert bypass == []


def test_force_is_what_binds_the_owner(world: World) -> None:
    def owner_sees() -> set[str]:
        with psycopg.connect(world.dsn) as conn:
            conn.execute("set role pgjobs_owner")
            with pgjobs.tenant(conn, world.a.org):
                return {r[0] for r in conn.execute("select organization from pgjobs.jobs")}

    assert owner_sees() == {world.a.org}
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        conn.execute("alter table pgjobs.jobs no force row level security")
    try:
        assert owner_sees() == set(ORGS)  # without FORCE the owner sees org-B too
    finally:
        with psycopg.connect(world.dsn, autocommit=True) as conn:
            conn.execute("alter table pgjobs.jobs force row level security")
    assert owner_sees() == {world.a.org}


def test_pooled_connection_carries_no_scope_from_one_tenant_into_the_next(world: World) -> None:
    with ConnectionPool(world.app_dsn, min_size=1, max_size=1, open=True) as pool:
        with pool.connection() as conn, pgjobs.tenant(conn, world.a.org):
            first_pid = conn.info.backend_pid
            assert {r[0] for r in conn.execute("select organization from pgjobs.jobs")} == {
                world.a.org
            }
        with pool.connection() as conn:
            assert conn.info.backend_pid == first_pid  # the same server session
            assert _count(conn, "select count(*) from pgjobs.jobs") == 0
            assert conn.execute("select pgjobs.current_organization()").fetchone() == (None,)
        with pool.connection() as conn, pgjobs.tenant(conn, world.b.org):
            assert {r[0] for r in conn.execute("select organization from pgjobs.jobs")} == {
                world.b.org
            }


def _drain(dsn: str) -> None:
    """Runs a real worker over the default queue until it is empty."""
    done = _cli(
        dsn,
        "worker",
        "--import",
        "tests.support.handlers",
        "--queues",
        "default",
        "--processes",
        "1",
        "--exit-when-idle",
    )
    assert done.returncode == 0, done.stderr[-4000:]


def test_worker_scopes_each_job_transaction_to_its_organization(dsn: str, roles: Roles) -> None:
    """A worker role sees every organization, yet a handler's queries through
    ctx.conn see the job's own organization only."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create table seen (job_id bigint primary key, orgs text[])")
        conn.execute("grant select, insert on seen to pgjobs_worker")
        for org in ORGS:
            pgjobs.enqueue(conn, "t.scope_probe", organization=org)
    _drain(as_user(dsn, roles.worker))
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select j.organization, s.orgs from seen s join pgjobs.jobs j on j.id = s.job_id"
        ).fetchall()
    assert sorted(rows) == [("org-A", ["org-A"]), ("org-B", ["org-B"])]


# -- events -------------------------------------------------------------------------


CHANNELS = ("pgjobs_state", "pgjobs_progress", "pgjobs_wakeup", "pgjobs_cancel")
SECRET = "s3cr3t-marker"


def test_a_role_with_no_grants_listening_hears_no_payload_message_or_error(
    world: World, roles: Roles
) -> None:
    listener = psycopg.connect(as_user(world.dsn, roles.nobody), autocommit=True)
    try:
        for channel in CHANNELS:
            listener.execute(pgsql.SQL("listen {}").format(pgsql.Identifier(channel)))
        with psycopg.connect(world.dsn, autocommit=True) as conn:
            job = pgjobs.enqueue(
                conn, "a.type", {"secret": SECRET}, organization="org-A", dedup_key=SECRET
            ).id
            token = queries.claim_tokens(conn, ["a-queue"], worker="w", lease_seconds=30)[job]
            progress(conn, job_id=job, lease_token=token, percent=50, message=SECRET)
            conn.execute("select pgjobs.cancel(%s)", (job,))
            queries.fail(conn, job, token, Failed("Boom", SECRET, SECRET, False, 1.0))
        heard = []
        deadline_polls = 0
        while deadline_polls < 20:
            got = list(listener.notifies(timeout=0.1, stop_after=100))
            heard += got
            deadline_polls = deadline_polls + 1 if not got else deadline_polls
            if {n.channel for n in heard} >= set(CHANNELS) and not got:
                break
    finally:
        listener.close()
    assert {n.channel for n in heard} == set(CHANNELS)  # it did hear every channel
    allowed = {"id", "organization", "job_type", "state", "attempt", "progress"}
    for note in heard:
        assert SECRET not in note.payload
        if note.channel in ("pgjobs_state", "pgjobs_progress"):
            assert set(json.loads(note.payload)) <= allowed


# -- hostile input -------------------------------------------------------------------

HOSTILE = [
    "'; drop table pgjobs.jobs; --",
    'quote " and \\ backslash',
    "semi;colon",
    "ünïcødé ✓ 日本 🎉",
    "line\nbreak\ttab",
    "%s %(x)s {}",
    "a" * 1000,
    "nul\x00byte",
    "",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_names_are_stored_verbatim_or_refused_cleanly(
    conn: psycopg.Connection[Any], text: str
) -> None:
    factories.ensure_type(conn, "t.noop")
    before = _count(conn, "select count(*) from pgjobs.jobs")
    for field in ("organization", "dedup_key", "queue"):
        try:
            with conn.transaction(force_rollback=True):
                job = pgjobs.enqueue(conn, "t.noop", **{field: text})
                stored = conn.execute(
                    pgsql.SQL("select {} from pgjobs.jobs where id = %s").format(
                        pgsql.Identifier(field)
                    ),
                    (job.id,),
                ).fetchone()
                assert stored is not None and stored[field] == text, field
                assert _count(conn, "select count(*) from pgjobs.jobs") == before + 1
        except InvalidJob as exc:
            assert str(exc), field
        assert _count(conn, "select count(*) from pgjobs.jobs") == before
    with conn.transaction(force_rollback=True), contextlib.suppress(InvalidJob):
        pgjobs.list_jobs(conn, organization=text, job_type=text, queue=text)
    assert conn.execute("select to_regclass('pgjobs.jobs') is not null as ok").fetchone() == {
        "ok": True
    }


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=st.dictionaries(st.text(max_size=10), JSON, max_size=5), name=st.text(max_size=50))
def test_enqueue_and_list_with_arbitrary_text_and_json(
    conn: psycopg.Connection[Any], payload: dict[str, Any], name: str
) -> None:
    factories.ensure_type(conn, "t.noop")
    with conn.transaction(force_rollback=True):
        try:
            job = pgjobs.enqueue(conn, "t.noop", payload, organization=name, dedup_key=name)
        except InvalidJob as exc:
            # The only refusals: NUL (jsonb and text cannot hold it), empty
            # names, control characters in an organization name.
            assert "\\u0000" in json.dumps(payload) or not name or _CONTROL.search(name), exc
            return
        row = pgjobs.get(conn, job.id)
        assert row["payload"] == payload
        assert row["organization"] == name
        listed = pgjobs.list_jobs(conn, organization=name, job_type="t.noop", limit=10_000)
        assert job.id in [r["id"] for r in listed]
        assert {r["organization"] for r in listed} == {name}


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"x": "a" * (1_100_000)}, "larger than"),
        ({"x": _nested(40)}, "nested"),
        ("not json {", "JSON object"),
        ([1, 2, 3], "JSON object"),
        ({"b": b"bytes"}, "not JSON"),
        ({"s": {1, 2}}, "not JSON"),
        ({"nan": float("nan")}, "not JSON"),
    ],
    ids=["huge", "deep", "text", "array", "bytes", "set", "nan"],
)
def test_hostile_payloads_are_refused_with_a_clear_message(
    conn: psycopg.Connection[Any], payload: Any, message: str
) -> None:
    factories.ensure_type(conn, "t.noop")
    before = _count(conn, "select count(*) from pgjobs.jobs")
    with pytest.raises(InvalidJob, match=message):
        pgjobs.enqueue(conn, "t.noop", payload)
    assert _count(conn, "select count(*) from pgjobs.jobs") == before


def test_worker_survives_hostile_jobs(dsn: str) -> None:
    """Jobs whose names and payloads are hostile run and finish like any other."""

    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = [
            pgjobs.enqueue(
                conn,
                "t.noop",
                {"k": text, text: [text]},
                organization=text or None,
                dedup_key=text or None,
            ).id
            for text in HOSTILE
            if not _CONTROL.search(text) and len(text) <= 200
        ]
    _drain(dsn)
    with psycopg.connect(dsn) as conn:
        states = conn.execute(
            "select state, count(*) from pgjobs.jobs where id = any(%s) group by state", (ids,)
        ).fetchall()
    assert states == [("completed", len(ids))]
