"""The set-based bulk enqueue (pgjobs.enqueue_checked, 40_enqueue.sql).

A batch of plain jobs skips the per-row insert trigger: its rows are marked
prechecked, a column no tenant may write. These tests show that the batch
stores what a plain INSERT of the same jobs stores, refuses what it refuses
with the same error, sends one wake-up per queue, and that a tenant cannot
forge the mark by any path plain SQL offers.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

import pgjobs
from pgjobs import registry, sql
from tests.support import handlers as _handlers  # registers the t.* job types
from tests.test_security import Roles, as_user, roles  # noqa: F401 - fixture

assert _handlers

ORG = "org-A"
VICTIM = "org-B"

# Compared without what each insert draws afresh (the id, the clock).
_ROW = "select to_jsonb(j) - 'id' - 'created_at' - 'run_at' as row from pgjobs.jobs j where id = %s"


def _insert(conn: psycopg.Connection[Any], job: dict[str, Any]) -> int:
    """One job by a plain INSERT (the per-row trigger path)."""
    cols = list(job)
    values = [json.dumps(v) if c == "payload" else v for c, v in job.items()]
    row = conn.execute(
        pgsql.SQL("insert into pgjobs.jobs ({}) values ({}) returning id").format(
            pgsql.SQL(", ").join(map(pgsql.Identifier, cols)),
            pgsql.SQL(", ").join(pgsql.Placeholder() * len(cols)),
        ),
        values,
    ).fetchone()
    assert row is not None
    return int(row[0])


def _enqueue_jobs(conn: psycopg.Connection[Any], jobs: list[dict[str, Any]]) -> list[Any]:
    return conn.execute(
        "select ord, id, duplicate from pgjobs.enqueue_jobs(%s::jsonb) order by ord",
        (json.dumps(jobs),),
    ).fetchall()


def _row(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    found = conn.execute(_ROW, (job_id,)).fetchone()
    assert found is not None
    return dict(found[0])


def _calls(conn: psycopg.Connection[Any], function: str) -> int:
    """Calls of a pgjobs function in this transaction (track_functions = all)."""
    found = conn.execute(
        "select coalesce(sum(calls), 0) from pg_stat_xact_user_functions"
        " where schemaname = 'pgjobs' and funcname = %s",
        (function,),
    ).fetchone()
    assert found is not None
    return int(found[0])


@pytest.fixture
def admin(dsn: str) -> Any:
    """A superuser connection with every registered job type written."""
    with psycopg.connect(dsn) as conn:
        registry.forget_synced()
        registry.sync(conn)
        conn.commit()
        yield conn


@pytest.fixture
def app_dsn(dsn: str, roles: Roles) -> str:  # noqa: F811
    with psycopg.connect(dsn, autocommit=True) as conn:
        registry.forget_synced()
        registry.sync(conn)
    return as_user(dsn, roles.app)


def _scoped(conn: psycopg.Connection[Any], org: str | None = ORG) -> None:
    conn.execute("select set_config('pgjobs.organization', %s, true)", (org or "",))


# -- the fast path is taken, and only for plain batches ------------------------


def test_a_plain_batch_skips_the_row_trigger_and_any_other_batch_does_not(admin: Any) -> None:
    admin.execute("set track_functions = 'all'")
    _enqueue_jobs(admin, [{"job_type": "t.noop"}] * 5)
    assert _calls(admin, "enqueue_checked") == 1
    assert _calls(admin, "jobs_before_insert") == 0
    _enqueue_jobs(admin, [{"job_type": "t.noop"}, {"job_type": "t.noop", "dedup_key": "k"}])
    assert _calls(admin, "jobs_before_insert") == 2
    admin.rollback()


# -- same rows, same refusals ------------------------------------------------------

_SAMPLES: list[dict[str, Any]] = [
    {"job_type": "t.defaults"},
    {"job_type": "t.defaults", "payload": {"order": 42, "note": "l'été"}},
    {"job_type": "t.defaults", "queue": "other", "priority": 0, "max_attempts": 2},
    {"job_type": "t.noop", "timeout_seconds": 0, "depends_on": []},
    {"job_type": "t.noop", "run_at": "2031-01-01T00:00:00+00:00"},
]


@pytest.mark.parametrize("org", [ORG, None], ids=["tenant scope", "system job"])
def test_a_bulk_batch_stores_the_rows_a_plain_insert_stores(
    app_dsn: str, admin: Any, org: str | None
) -> None:
    conn = psycopg.connect(app_dsn) if org else admin
    with conn.transaction():
        _scoped(conn, org)
        bulk = [job_id for _, job_id, _ in _enqueue_jobs(conn, _SAMPLES)]
        plain = [_insert(conn, job) for job in _SAMPLES]
        assert bulk == sorted(bulk), "ids ascend in input order"
        for job, b, p in zip(_SAMPLES, bulk, plain, strict=True):
            assert _row(conn, b) == _row(conn, p), job
            assert _row(conn, b)["organization"] == org
            assert _row(conn, b)["prechecked"] is True
        run_at = conn.execute(
            "select run_at = now(), created_at = now() from pgjobs.jobs where id = %s", (bulk[0],)
        ).fetchone()
        assert run_at == (True, True)
    if org:
        conn.close()


_REFUSED: dict[str, list[dict[str, Any]]] = {
    "a limit in a plain batch": [{"job_type": "t.noop"}, {"job_type": "t.noop", "priority": 4}],
    "a limit on the second row": [
        {"job_type": "t.noop"},
        {"job_type": "t.noop", "priority": 4},
        {"job_type": "t.nope"},
    ],
    "an unknown type after a limit": [
        {"job_type": "t.noop", "queue": "q\u001b"},
        {"job_type": "t.nope"},
    ],
    "an unknown type": [{"job_type": "t.noop"}, {"job_type": "t.nope"}],
    "a payload that is not an object": [{"job_type": "t.noop", "payload": [1]}],
    "a missing parent": [{"job_type": "t.noop", "depends_on": [987654321]}],
    "another organization": [
        {"job_type": "t.noop"},
        {"job_type": "t.noop", "organization": VICTIM},
    ],
}


def _refusal(conn: psycopg.Connection[Any], write: Any) -> tuple[str | None, str | None]:
    try:
        with conn.transaction():
            _scoped(conn)
            write()
    except psycopg.Error as exc:
        return exc.sqlstate, exc.diag.message_primary
    raise AssertionError("accepted")


@pytest.mark.parametrize("case", list(_REFUSED))
def test_a_bulk_batch_is_refused_as_a_plain_insert_of_it_is(app_dsn: str, case: str) -> None:
    jobs = _REFUSED[case]
    with psycopg.connect(app_dsn) as app:
        bulk = _refusal(app, lambda: _enqueue_jobs(app, jobs))
        plain = _refusal(
            app,
            lambda: app.execute(
                "insert into pgjobs.jobs (job_type, payload, organization, queue, priority,"
                " depends_on) select job_type, coalesce(payload, '{}'), organization, queue,"
                " priority, depends_on from jsonb_to_recordset(%s::jsonb) as j(job_type text,"
                " payload jsonb, organization text, queue text, priority smallint,"
                " depends_on bigint[])",
                (json.dumps(jobs),),
            ),
        )
        assert bulk == plain
        assert bulk[0] in ("PJ001", "42501")
        with app.transaction():
            _scoped(app)
            assert app.execute("select count(*) from pgjobs.jobs").fetchone() == (0,)


def test_an_unscoped_tenant_batch_gets_the_no_scope_error(app_dsn: str) -> None:
    with psycopg.connect(app_dsn) as app, pytest.raises(psycopg.Error) as caught:
        _enqueue_jobs(app, [{"job_type": "t.noop"}])
    assert caught.value.sqlstate == "PJ004"


# -- dedup and dependencies keep their meaning --------------------------------------


def test_dedup_within_the_batch_and_against_live_jobs(admin: Any) -> None:
    held = pgjobs.enqueue(admin, "t.noop", dedup_key="held").id
    results = _enqueue_jobs(
        admin,
        [
            {"job_type": "t.noop", "dedup_key": "new"},
            {"job_type": "t.noop"},
            {"job_type": "t.noop", "dedup_key": "new"},
            {"job_type": "t.noop", "dedup_key": "held"},
        ],
    )
    (_, first, d1), (_, plain, d2), (_, again, d3), (_, old, d4) = results
    assert (d1, d2, d3, d4) == (False, False, True, True)
    assert again == first and old == held and plain not in (first, held)
    admin.rollback()


def test_dependencies_in_a_batch(admin: Any) -> None:
    parent = pgjobs.enqueue(admin, "t.noop").id
    dead = pgjobs.enqueue(admin, "t.noop").id
    admin.execute("select pgjobs.cancel(%s)", (dead,))
    (_, waits, _), (_, canceled, _) = _enqueue_jobs(
        admin,
        [
            {"job_type": "t.noop", "depends_on": [parent]},
            {"job_type": "t.noop", "depends_on": [dead]},
        ],
    )
    states = dict(admin.execute("select id, state from pgjobs.jobs").fetchall())
    assert (states[waits], states[canceled]) == ("waiting", "canceled")
    admin.rollback()


# -- wake-up -----------------------------------------------------------------------


def test_a_batch_wakes_each_of_its_queues_once(dsn: str, admin: Any) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("listen pgjobs_wakeup")
        pgjobs.enqueue_many(
            admin,
            [{"job_type": "t.noop"}] * 60 + [{"job_type": "t.noop", "queue": "other"}] * 40,
        )
        admin.commit()
        got: list[str] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(got) < 2:
            got += [n.payload for n in listener.notifies(timeout=0.2, stop_after=2)]
        # Anything more would have arrived with these: one transaction's
        # notifications are delivered together.
        got += [n.payload for n in listener.notifies(timeout=0.2)]
    assert sorted(got) == ["default", "other"]


# -- indexes a bulk enqueue writes ----------------------------------------------------


def _index_bytes(conn: psycopg.Connection[Any], index: str) -> int:
    found = conn.execute("select pg_relation_size(%s::regclass)", (index,)).fetchone()
    assert found is not None
    return int(found[0])


def test_system_jobs_take_no_entry_in_the_organization_index(admin: Any) -> None:
    """0200: jobs_organization_id_idx serves readers that name an organization
    only, so a system job (organization NULL) is not written to it; a tenant's
    job is."""
    index = "pgjobs.jobs_active_organization_id_idx"
    empty = _index_bytes(admin, index)  # the metapage alone
    pgjobs.enqueue_many(admin, [{"job_type": "t.noop"}] * 500)
    pgjobs.enqueue_many(admin, [{"job_type": "t.noop", "payload": {"n": n}} for n in range(500)])
    assert _index_bytes(admin, index) == empty
    pgjobs.enqueue_many(admin, [{"job_type": "t.noop", "organization": ORG}] * 500)
    assert _index_bytes(admin, index) > empty


def _index_scans_run(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """(index, index condition) of every index scan an EXPLAIN ANALYZE plan
    ran (a branch behind a false one-time filter never runs)."""
    found = []
    if "Index Name" in plan and plan.get("Actual Loops", 0) > 0:
        found.append((plan["Index Name"], plan.get("Index Cond", "")))
    for child in plan.get("Plans", []):
        found += _index_scans_run(child)
    return found


@pytest.mark.parametrize(
    "viewer", ["an admin naming it", "its tenant naming none", "an admin scoped to it"]
)
def test_listing_one_organization_finds_it_by_its_index(admin: Any, viewer: str) -> None:
    """The reader of jobs_organization_id_idx: a listing of one organization's
    jobs newest first finds them by (organization, id) on the active partition,
    among many system jobs and another organization's, whether the listing
    names the organization or the session is scoped to it. Row-level security
    alone limits a scoped session's rows but is no index condition: the
    listing walked every organization's jobs newest first."""
    pgjobs.enqueue_many(admin, [{"job_type": "t.noop", "organization": ORG}] * 3)
    pgjobs.enqueue_many(admin, [{"job_type": "t.noop"}] * 3000)
    pgjobs.enqueue_many(admin, [{"job_type": "t.noop", "organization": VICTIM}] * 3000)
    admin.execute("analyze pgjobs.jobs_active")
    named: str | None = ORG
    if viewer == "its tenant naming none":
        admin.execute("set local role pgjobs_app")
        _scoped(admin)
        named = None
    elif viewer == "an admin scoped to it":
        admin.execute("set local role pgjobs_admin")
        _scoped(admin)
        named = None
    else:
        admin.execute("set local role pgjobs_admin")
    params = dict.fromkeys(("state", "job_type", "queue", "since", "until", "after_id"))
    where = {**params, "organization": named, "limit": 50}
    plan = admin.execute(
        "explain (analyze, format json) " + sql.query("job_list"), where
    ).fetchone()
    assert plan is not None
    ran = [scan for scan in _index_scans_run(plan[0][0]["Plan"])
           if scan[0].startswith("jobs_active")]  # fmt: skip
    assert [index for index, _ in ran] == ["jobs_active_organization_id_idx"], ran
    assert ran[0][1].startswith("(organization = "), ran
    listed = admin.execute(sql.query("job_list"), where).fetchall()
    assert len(listed) == 3


def test_an_operators_listing_finds_every_organizations_jobs_newest_first(admin: Any) -> None:
    """With no organization asked or scoped, the listing is every job's."""
    pgjobs.enqueue_many(admin, [{"job_type": "t.noop", "organization": ORG}] * 2)
    pgjobs.enqueue_many(admin, [{"job_type": "t.noop"}] * 2)
    pgjobs.enqueue_many(admin, [{"job_type": "t.noop", "organization": VICTIM}] * 2)
    admin.execute("set local role pgjobs_admin")
    listed = pgjobs.list_jobs(admin, limit=5)
    assert [job.id for job in listed] == sorted((job.id for job in listed), reverse=True)
    assert len(listed) == 5
    assert {job.organization for job in pgjobs.list_jobs(admin)} == {ORG, None, VICTIM}


# -- the Python client -------------------------------------------------------------


def test_enqueue_many_validates_each_distinct_set_of_fields(admin: Any) -> None:
    with pytest.raises(pgjobs.InvalidJob, match="priority must be an integer"):
        pgjobs.enqueue_many(
            admin, [{"job_type": "t.noop", "priority": 1}, {"job_type": "t.noop", "priority": True}]
        )
    admin.rollback()
    results = pgjobs.enqueue_many(
        admin,
        [
            {"job_type": "t.noop", "payload": {"i": i}, "queue": "q1" if i % 2 else "q2"}
            for i in range(6)
        ],
    )
    rows = admin.execute(
        "select payload->>'i', queue from pgjobs.jobs where id = any(%s) order by id",
        ([r.id for r in results],),
    ).fetchall()
    assert rows == [(str(i), "q1" if i % 2 else "q2") for i in range(6)]
    admin.rollback()


# -- forging the mark ----------------------------------------------------------------

_FORGERIES = {
    "insert": "insert into pgjobs.jobs (job_type, prechecked) values ('t.nope', true)",
    "insert select": "insert into pgjobs.jobs (job_type, prechecked) select 't.nope', true",
    "update": "update pgjobs.jobs set prechecked = true",
}


@pytest.mark.parametrize("kind", ["app", "admin"])
@pytest.mark.parametrize("forgery", list(_FORGERIES))
def test_no_tenant_or_admin_can_write_the_mark(
    dsn: str,
    roles: Roles,  # noqa: F811
    kind: str,
    forgery: str,
) -> None:
    with (
        psycopg.connect(as_user(dsn, getattr(roles, kind))) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
        conn.transaction(),
    ):
        _scoped(conn)
        conn.execute(_FORGERIES[forgery])


def test_no_tenant_can_copy_the_mark(app_dsn: str) -> None:
    with (
        psycopg.connect(app_dsn) as app, pytest.raises(
            (psycopg.errors.InsufficientPrivilege, psycopg.errors.FeatureNotSupported)
        ),
        app.transaction(),
    ):
        _scoped(app)
        with app.cursor().copy("copy pgjobs.jobs (job_type, prechecked) from stdin") as copy:
            copy.write_row(["t.nope", True])


def test_a_tenant_cannot_become_the_owner_or_bypass_by_a_setting(app_dsn: str) -> None:
    with psycopg.connect(app_dsn) as app:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), app.transaction():
            app.execute("set local role pgjobs_owner")
        # Settings steer nothing: the row still meets the trigger.
        with pytest.raises(psycopg.Error, match="unknown job type"), app.transaction():
            _scoped(app)
            app.execute("select set_config('pgjobs.prechecked', 'true', true)")
            app.execute("insert into pgjobs.jobs (job_type) values ('t.nope')")


@pytest.mark.parametrize(
    "jobs",
    [
        [{"job_type": "t.nope"}],
        [{"job_type": "t.noop", "organization": VICTIM}],
        [{"job_type": "t.noop", "dedup_key": "k"}],
        [{"job_type": "t.noop", "depends_on": [1]}],
    ],
    ids=["unknown type", "other organization", "dedup key", "parents"],
)
def test_calling_enqueue_checked_directly_stores_nothing_it_did_not_check(
    app_dsn: str, admin: Any, jobs: list[dict[str, Any]]
) -> None:
    with psycopg.connect(app_dsn) as app, app.transaction():
        _scoped(app)
        got = app.execute("select pgjobs.enqueue_checked(%s::jsonb)", (json.dumps(jobs),))
        assert got.fetchone() == (None,)
    assert admin.execute("select count(*) from pgjobs.jobs").fetchone() == (0,)


@pytest.mark.parametrize(
    "job",
    [
        {"payload": {"n": 10**400}},
        {"payload": {"x": json.loads("[" * 33 + "]" * 33)}},
        {"payload": [1]},
        {"queue": "q\u0007"},
        {"priority": 4},
        {"max_attempts": 0},
        {"timeout_seconds": 3000000},
        {"run_at": "infinity"},
        {"organization": "o" * 201},
    ],
    ids=lambda job: next(iter(job)),
)
def test_rows_enqueue_checked_writes_meet_every_input_limit(
    app_dsn: str, admin: Any, job: dict[str, Any]
) -> None:
    """enqueue_plain tests its rows' limits itself (they skip the row trigger)
    and refuses them as the trigger refuses a plain INSERT's."""
    jobs = [{"job_type": "t.noop"}, {"job_type": "t.noop", **job}]
    with (
        psycopg.connect(app_dsn) as app,
        pytest.raises(psycopg.Error) as caught,
        app.transaction(),
    ):
        _scoped(app, job.get("organization", ORG))
        app.execute("select pgjobs.enqueue_checked(%s::jsonb)", (json.dumps(jobs),))
    assert caught.value.sqlstate == "PJ001"
    assert admin.execute("select count(*) from pgjobs.jobs").fetchone() == (0,)
