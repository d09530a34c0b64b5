"""Least privilege per role, and notifications bounded whatever a row holds.

pgjobs_app changes jobs only through the verbs; history, dedup keys and rate
windows are written by pgjobs alone; only the owner and workers write
job_types. The schema lint below compares every role's write privilege on
every column with an explicit allow-list.
"""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import pgjobs
from pgjobs import cli
from pgjobs.statements import Failed
from pgjobs.statements.progress import progress
from tests.support import factories, queries
from tests.test_security import (  # noqa: F401 - fixtures
    ROOT,
    Roles,
    World,
    as_user,
    roles,
    snapshot,
    world,
)

# -- the allow-list ---------------------------------------------------------------

JOB_INPUTS = {
    "id",  # accepted and replaced: the trigger draws every id (0008)
    "job_type",
    "payload",
    "organization",
    "queue",
    "priority",
    "run_at",
    "dedup_key",
    "depends_on",
    "max_attempts",
    "timeout_seconds",
}
ALL = "*"  # every column of the table
# (role, table) -> {privilege: columns}; anything not listed is refused.
WRITES: dict[tuple[str, str], dict[str, set[str] | str]] = {
    ("pgjobs_app", "jobs"): {"INSERT": JOB_INPUTS},
    ("pgjobs_worker", "jobs"): {"INSERT": ALL, "UPDATE": ALL, "DELETE": ALL},
    ("pgjobs_worker", "job_events"): {"DELETE": ALL},
    # The state relay's outbox (0020): the workers' sessions write, the relay empties.
    ("pgjobs_worker", "state_outbox"): {"INSERT": ALL, "DELETE": ALL},
    ("pgjobs_worker", "rate_windows"): {"INSERT": ALL, "UPDATE": ALL, "DELETE": ALL},
    ("pgjobs_worker", "worker_processes"): {"INSERT": ALL, "UPDATE": ALL, "DELETE": ALL},
    ("pgjobs_worker", "job_types"): {"INSERT": ALL, "UPDATE": ALL},
    # Turns at rescue, prune, migrate and vacuum (0030): only workers take them.
    ("pgjobs_worker", "maintenance_leases"): {"INSERT": ALL, "UPDATE": ALL},
    ("pgjobs_admin", "jobs"): {
        "INSERT": JOB_INPUTS,
        "UPDATE": {"run_at", "priority", "queue"},
        "DELETE": ALL,
    },
    ("pgjobs_admin", "job_events"): {"DELETE": ALL},
    ("pgjobs_admin", "rate_windows"): {"DELETE": ALL},
    ("pgjobs_admin", "worker_processes"): {"DELETE": ALL},
    # Schedules (0013): each role writes its organization's schedules directly,
    # row-level security scoping it. Fire records are written by the owner's
    # functions; an application only deletes them, through unschedule (0085).
    **{
        (role, table): {"INSERT": ALL, "UPDATE": ALL, "DELETE": ALL}
        for role in ("pgjobs_app", "pgjobs_worker", "pgjobs_admin")
        for table in ("schedules", "schedule_fires")
    },
    ("pgjobs_app", "schedule_fires"): {"DELETE": ALL},
}
RUNTIME_ROLES = ("pgjobs_app", "pgjobs_worker", "pgjobs_admin")
KNOWN_TABLES = {
    "jobs",
    "job_events",
    "dedup_keys",
    "rate_windows",
    "worker_processes",
    "job_types",
    "schema_migrations",
    "schedules",
    "schedule_fires",
    "maintenance_leases",
    "state_outbox",
    # The partitions of jobs (0060): nobody but the owner reads or writes one
    # directly; everyone goes through pgjobs.jobs.
    "jobs_active",
    "jobs_finished",
    "jobs_finished_default",
    "jobs_finished_history",
    "jobs_finished_<period>",
    "partition_settings",
    # The partitions of history (0090): likewise, everyone goes through
    # pgjobs.job_events.
    "job_events_default",
    "job_events_history",
    "job_events_<period>",
}
PERIOD_PARTITION = re.compile(r"^(jobs_finished|job_events)_\d{8}_\d{4}$")


def _known(table: str) -> str:
    """The allow-list's name for a table: one for every period's partition."""
    match = PERIOD_PARTITION.match(table)
    return f"{match[1]}_<period>" if match else table


def _allowed(role: str, table: str, privilege: str, column: str) -> bool:
    columns = WRITES.get((role, table), {}).get(privilege, set())
    return columns == ALL or column in columns


def test_every_role_writes_exactly_the_columns_its_work_needs(
    conn: psycopg.Connection[Any],
) -> None:
    """Every role x table x column x write privilege, against the allow-list.
    A new table fails here until its row in WRITES says who may write it.
    Partitions of finished jobs made by the workers count, one made here too."""
    conn.execute("select pgjobs.partitions_ensure()")
    tables = {
        _known(r["relname"])
        for r in conn.execute(
            "select relname from pg_class where relnamespace = 'pgjobs'::regnamespace"
            " and relkind in ('r', 'p')"
        )
    }
    assert tables <= KNOWN_TABLES, f"add {tables - KNOWN_TABLES} to the allow-list"
    rows = conn.execute(
        "select r.role, c.relname as table, a.attname as column, p.privilege,"
        "       case when p.privilege = 'DELETE'"
        "            then has_table_privilege(r.role, c.oid, 'DELETE')"
        "            else has_column_privilege(r.role, c.oid, a.attnum, p.privilege) end as granted"
        "  from unnest(%s::text[]) as r(role)"
        " cross join pg_class c"
        "  join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped"
        " cross join unnest(array['INSERT', 'UPDATE', 'DELETE']) as p(privilege)"
        " where c.relnamespace = 'pgjobs'::regnamespace and c.relkind in ('r', 'p')",
        (list(RUNTIME_ROLES),),
    ).fetchall()
    assert len(rows) > 100
    assert any(PERIOD_PARTITION.match(r["table"]) for r in rows)
    wrong = [
        (r["role"], r["table"], r["column"], r["privilege"], r["granted"])
        for r in rows
        if r["granted"] != _allowed(r["role"], _known(r["table"]), r["privilege"], r["column"])
    ]
    assert wrong == []
    truncate = conn.execute(
        "select r.role, c.relname from unnest(%s::text[]) as r(role) cross join pg_class c"
        " where c.relnamespace = 'pgjobs'::regnamespace and c.relkind in ('r', 'p')"
        "   and (has_table_privilege(r.role, c.oid, 'TRUNCATE')"
        "        or has_table_privilege(r.role, c.oid, 'TRIGGER'))",
        (list(RUNTIME_ROLES),),
    ).fetchall()
    assert truncate == []


def test_definer_functions_belong_to_the_rls_bound_owner(conn: psycopg.Connection[Any]) -> None:
    """A SECURITY DEFINER function owned by a superuser would bypass row-level
    security; pgjobs' run as pgjobs_owner, whom FORCE binds."""
    owners = conn.execute(
        "select p.proname, r.rolname, r.rolsuper or r.rolbypassrls as unbound"
        "  from pg_proc p join pg_roles r on r.oid = p.proowner"
        " where p.pronamespace = 'pgjobs'::regnamespace and p.prosecdef"
    ).fetchall()
    assert {o["proname"] for o in owners} >= {
        "jobs_before_insert",
        "jobs_after_update",
        "jobs_after_delete",
        "cancel",
        "retry",
    }
    assert [o["proname"] for o in owners if o["unbound"] or o["rolname"] != "pgjobs_owner"] == []


_NOTIFY = re.compile(r"pg_notify\(\s*'(\w+)'\s*,\s*([^;]*?)\)\s*(?:as|is|\)|;|$)", re.I | re.M)
# What a NOTIFY may carry: ids and numbers, or text the limits bound.
BOUNDED_PAYLOADS = {
    # Directly, or relayed from state_outbox (0020), whose rows the
    # state-change trigger builds with state_event.
    "pgjobs_state": ("pgjobs.state_event(", "e.payload"),
    "pgjobs_progress": "pgjobs.progress_event(",
    "pgjobs_wakeup": ("new.queue", "q"),  # a queue name: 1-200 characters
    "pgjobs_cancel": "cancel.id::text",
}


def test_no_function_trusts_or_unboundedly_sends_a_notify(conn: psycopg.Connection[Any]) -> None:
    """Adversarial lint: every pg_notify in the schema's functions and in the
    runtime queries sends a payload built to fit 8,000 bytes, and no pgjobs
    function reads a channel (LISTEN in SQL, or a function that takes a
    notification's payload and acts on it as a command)."""
    functions = [
        r["prosrc"]
        for r in conn.execute(
            "select prosrc from pg_proc where pronamespace = 'pgjobs'::regnamespace"
        )
    ]
    bodies = functions + [p.read_text() for p in (ROOT / "sql" / "queries").glob("*.sql")]
    sent = [(m.group(1), m.group(2).strip()) for body in bodies for m in _NOTIFY.finditer(body)]
    assert {channel for channel, _ in sent} == set(BOUNDED_PAYLOADS)
    for channel, payload in sent:
        allowed = BOUNDED_PAYLOADS[channel]
        options = allowed if isinstance(allowed, tuple) else (allowed,)
        assert payload.startswith(options), (channel, payload)
    # Only Python listens (subscribe, the workers), and reads what it hears
    # back from the tables; no SQL function takes a channel's word for anything.
    assert [f for f in functions if re.search(r"\blisten\b|pg_listening_channels", f, re.I)] == []


def test_notify_payloads_stay_under_8000_bytes_whatever_a_row_holds(
    conn: psycopg.Connection[Any],
) -> None:
    """The payload builders cut text to what the limits allow: even names far
    past them (rows from before the limits, say) make a payload Postgres sends."""
    worst = ["\x01" * 9000, '"' * 9000, "🎉" * 9000]
    for org in worst:
        for name in worst:
            row = conn.execute(
                "select octet_length(pgjobs.state_event(-9223372036854775808, %s, %s, %s,"
                " -2147483648)) as state,"
                " octet_length(pgjobs.progress_event(-9223372036854775808, %s,"
                " 99.123456789123456789, %s)) as progress",
                (org, name, name, org, name),
            ).fetchone()
            assert row is not None and row["state"] < 8000 and row["progress"] < 8000


def test_notifications_of_a_job_with_maximal_names_are_sent_and_parse(dsn: str) -> None:
    org = '"\\' * 100  # 200 characters, each escaped in JSON
    job_type = "🎉" * 200  # 200 characters of 4 bytes
    queue = "q" * 200
    with (
        psycopg.connect(dsn, autocommit=True) as listener,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        listener.execute("listen pgjobs_state")
        listener.execute("listen pgjobs_progress")
        conn.execute(
            "insert into pgjobs.job_types (name, handler, queue) values (%s, 'm:f', %s)",
            (job_type, queue),
        )
        job = pgjobs.enqueue(conn, job_type, organization=org).id
        tokens = queries.claim_tokens(conn, [queue], worker="w", lease_seconds=30)
        assert list(tokens) == [job]
        progress(conn, job_id=job, lease_token=tokens[job], percent=50.5, message="m")
        assert pgjobs.cancel(conn, job) == "running"
        heard = list(listener.notifies(timeout=2, stop_after=2))
    events = [json.loads(n.payload) for n in heard]
    assert [(e["id"], e["organization"]) for e in events] == [(job, org), (job, org)]
    assert events[0]["job_type"] == job_type and events[0]["state"] == "running"
    assert events[1]["progress"] == 50.5


# -- a tenant's direct writes -----------------------------------------------------

DIRECT_WRITES = {
    "running job back to queued": "update pgjobs.jobs set state = 'queued' where id = %(running)s",
    "state": "update pgjobs.jobs set state = 'canceled' where id = %(queued)s",
    "lease": "update pgjobs.jobs set lease_token = 1, lease_expires_at = now()"
    " where id = %(running)s",
    "attempt": "update pgjobs.jobs set attempt = 0 where id = %(running)s",
    "result": "update pgjobs.jobs set result = '{}' where id = %(running)s",
    "error": "update pgjobs.jobs set last_error = 'x' where id = %(running)s",
    "run_at": "update pgjobs.jobs set run_at = now() where id = %(queued)s",
    "payload": "update pgjobs.jobs set payload = '{}' where id = %(queued)s",
    "cancel marker": "update pgjobs.jobs set cancel_requested_at = now() where id = %(running)s",
    "lock for update": "select id from pgjobs.jobs where id = %(queued)s for update",
    "delete a job": "delete from pgjobs.jobs where id = %(queued)s",
    "insert internal columns": "insert into pgjobs.jobs (job_type, state, lease_token, worker)"
    " values ('a.type', 'running', 1, 'me')",
    "insert job_events": "insert into pgjobs.job_events (job_id, organization, job_type,"
    " attempt, to_state, message) values (%(running)s, 'org-A', 'a.type', 1, 'completed',"
    " E'\\x1b[2Jforged')",
    "update job_events": "update pgjobs.job_events set message = 'x'",
    "delete job_events": "delete from pgjobs.job_events",
    "insert dedup_keys": "insert into pgjobs.dedup_keys values ('org-A', 'a.type', 'k',"
    " %(queued)s, true, now() + interval '1 day')",
    "update dedup_keys": "update pgjobs.dedup_keys set active = false",
    "delete dedup_keys": "delete from pgjobs.dedup_keys",
    "insert rate_windows": "insert into pgjobs.rate_windows values ('org-A', 'x', now(), 0)",
    "update rate_windows": "update pgjobs.rate_windows set used = 0",
    "delete rate_windows": "delete from pgjobs.rate_windows",
    "insert job_types": "insert into pgjobs.job_types (name, handler) values ('evil', 'os:system')",
    "update job_types": "update pgjobs.job_types set handler = 'os:system'",
    "next id": "select nextval('pgjobs.jobs_id_seq')",
    # A forged fire record for a tick not yet due would make the schedule skip it.
    "insert schedule_fires": "insert into pgjobs.schedule_fires (organization, schedule, fire_at)"
    " values ('org-A', 's', now() + interval '1 hour')",
    "update schedule_fires": "update pgjobs.schedule_fires set fire_at = now()",
}


@pytest.mark.parametrize("write", list(DIRECT_WRITES))
def test_a_tenant_cannot_write_what_only_pgjobs_writes(world: World, write: str) -> None:  # noqa: F811
    ids = {"running": world.a.ids["running"], "queued": world.a.ids["queued"]}
    before = [snapshot(world.dsn, org) for org in ("org-A", "org-B")]
    with (
        psycopg.connect(world.app_dsn) as app,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
        pgjobs.tenant(app, "org-A"),
    ):
        app.execute(DIRECT_WRITES[write], ids)
        pytest.fail(f"{write} was allowed")
    assert [snapshot(world.dsn, org) for org in ("org-A", "org-B")] == before


def test_the_verbs_still_write_history_dedup_keys_and_the_cascade_for_a_tenant(
    world: World,  # noqa: F811
) -> None:
    """What the tenant may not write directly, cancel, retry and enqueue write
    on its behalf, scoped to its organization."""
    with psycopg.connect(world.app_dsn) as app:
        with pgjobs.tenant(app, "org-A"):
            parent = pgjobs.enqueue(app, "a.type", dedup_key="fresh").id
            child = pgjobs.enqueue(app, "a.type", depends_on=[parent]).id
            assert pgjobs.enqueue(app, "a.type", dedup_key="fresh").duplicate
            assert pgjobs.cancel(app, parent) == "canceled"
            assert pgjobs.retry(app, world.a.ids["dead"]) == "queued"
        app.commit()
    with psycopg.connect(world.dsn) as conn:
        events = conn.execute(
            "select job_id, to_state from pgjobs.job_events where job_id = any(%s) order by id",
            ([parent, child, world.a.ids["dead"]],),
        ).fetchall()
        key = conn.execute(
            "select active from pgjobs.dedup_keys"
            " where organization = 'org-A' and dedup_key = 'fresh'"
        ).fetchone()
    assert (parent, "canceled") in events and (child, "canceled") in events
    assert (world.a.ids["dead"], "queued") in events
    assert key == (False,)  # the canceled job released its key


def test_an_admin_cannot_write_history_job_types_or_states(world: World, roles: Roles) -> None:  # noqa: F811
    with psycopg.connect(as_user(world.dsn, roles.admin)) as admin:
        for statement in (
            "insert into pgjobs.job_events (job_id, job_type, attempt, to_state)"
            " values (1, 'a.type', 1, 'completed')",
            "update pgjobs.job_types set handler = 'os:system'",
            f"update pgjobs.jobs set state = 'queued' where id = {world.a.ids['running']}",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                admin.execute(statement)
            admin.rollback()
        # What an operator does is still there: reschedule, retry.
        admin.execute(
            "update pgjobs.jobs set run_at = now() + interval '1 hour' where id = %s",
            (world.a.ids["queued"],),
        )
        assert pgjobs.retry(admin, world.b.ids["dead"]) == "queued"
        admin.commit()


def test_history_on_a_terminal_shows_control_characters_escaped(dsn: str) -> None:
    escape = "\x1b]0;owned\x07\x1b[2J\x9b31m"
    with psycopg.connect(dsn, autocommit=True) as conn:
        factories.ensure_type(conn)
        job = pgjobs.enqueue(conn, factories.JOB_TYPE).id
        token = queries.claim_tokens(conn, ["default"], worker="w", lease_seconds=30)[job]
        queries.fail(
            conn,
            job,
            token,
            Failed(f"Boom{escape}", f"bad {escape}", f"Traceback\n  line {escape}\n", True, 1.0),
        )
    result = CliRunner().invoke(cli.main, ["history", str(job), "--dsn", dsn])
    assert result.exit_code == 0, result.output
    assert "\\x1b]0;owned" in result.output and "\\x9b31m" in result.output
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", result.output)
    assert "  line \\x1b" in result.output  # tracebacks keep their lines


def test_limits_stay_in_step_between_python_and_sql(conn: psycopg.Connection[Any]) -> None:
    from pgjobs import limits, payload

    row = conn.execute(
        "select pgjobs.max_timeout_seconds() as timeout, pgjobs.max_attempts_limit() as attempts,"
        " pgjobs.max_payload_bytes() as payload"
    ).fetchone()
    assert row == {
        "timeout": limits.MAX_TIMEOUT_SECONDS,
        "attempts": limits.MAX_ATTEMPTS,
        "payload": payload.MAX_PAYLOAD_BYTES,
    }
    # statement_timeout holds the longest timeout with the worker's margin.
    conn.execute(
        "select set_config('statement_timeout', %s, true)",
        (str(limits.MAX_TIMEOUT_SECONDS * 1000 + 1000),),
    )
