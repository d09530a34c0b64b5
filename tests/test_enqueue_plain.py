"""Enqueue without per-statement cost, and the typed-array bulk path (0110).

pgjobs.enqueue_plain takes a batch as one array per column, checks and
completes it set-based and marks its rows prechecked, so they skip the row
trigger. These tests show a tenant login gets nothing through it that the row
trigger would refuse (limits, other organizations, unknown types), that
enqueue_many takes it for plain batches only, and that no trigger condition
or CHECK on the jobs table costs an SQL function's parse per statement again.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import pgjobs
from tests import test_bulk_enqueue as _bulk
from tests.support import handlers as _handlers  # registers the t.* job types
from tests.test_security import roles  # noqa: F401 - fixture
from tests.test_trust_limits import COLUMN_TYPES, POISONS, Poison

assert _handlers

ORG, VICTIM, _scoped = _bulk.ORG, _bulk.VICTIM, _bulk._scoped
admin, app_dsn = _bulk.admin, _bulk.app_dsn  # fixtures: a superuser, a tenant login
_calls = _bulk._calls

# enqueue_plain's parameters and their array types.
_ARRAYS = {
    "job_type": "text[]",
    "payload": "jsonb[]",
    "organization": "text[]",
    "queue": "text[]",
    "priority": "smallint[]",
    "run_at": "timestamptz[]",
    "max_attempts": "int[]",
    "timeout_seconds": "int[]",
}


def _plain(conn: psycopg.Connection[Any], **columns: list[Any] | None) -> Any:
    """pgjobs.enqueue_plain with the given columns, each a list of text values."""
    args = ", ".join(f"{name} => %({name})s::text[]::{_ARRAYS[name]}" for name in columns)
    row = conn.execute(f"select pgjobs.enqueue_plain({args})", columns).fetchone()
    assert row is not None
    return row[0]


def _jobs(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select count(*) from pgjobs.jobs").fetchone()
    assert row is not None
    return int(row[0])


# -- a tenant login gets nothing through it the row trigger refuses ------------------

# Every poison of test_trust_limits that enqueue_plain can carry (it takes no
# dedup key), as the second job of a batch whose first job is fine.
_PLAIN_POISONS = {
    name: poison
    for name, poison in POISONS.items()
    if set(poison.values) <= set(_ARRAYS) and "job_type" not in poison.values
}


def _assert_refused(
    app_dsn: str, admin: Any, poison: Poison, columns: dict[str, list[Any] | None]
) -> None:
    """A tenant login's enqueue_plain of these columns is refused as the poison
    says, and nothing is written."""
    with (
        psycopg.connect(app_dsn) as app,
        pytest.raises(psycopg.Error) as caught,
        app.transaction(),
    ):
        _scoped(app, poison.scope)
        _plain(app, **columns)
    assert caught.value.sqlstate == "PJ001", caught.value
    assert poison.message in (caught.value.diag.message_primary or "")
    assert admin.execute("select count(*) from pgjobs.jobs").fetchone() == (0,)


@pytest.mark.parametrize("name", list(_PLAIN_POISONS))
def test_a_tenant_cannot_pass_a_value_past_a_limit_through_enqueue_plain(
    app_dsn: str, admin: Any, name: str
) -> None:
    poison: Poison = _PLAIN_POISONS[name]
    assert set(poison.values) <= set(COLUMN_TYPES)
    columns: dict[str, list[Any] | None] = {"job_type": ["t.noop", "t.noop"]}
    for column, value in poison.values.items():
        columns[column] = [None, value]
    _assert_refused(app_dsn, admin, poison, columns)


# The same poisons through the one-head path (0140): a batch whose jobs differ
# only in their payloads has its shared values tested once and each payload
# alone; a poison is the shared value of three jobs, or the second payload.
@pytest.mark.parametrize("name", list(_PLAIN_POISONS))
def test_a_tenant_cannot_pass_a_value_past_a_limit_through_one_shared_head(
    app_dsn: str, admin: Any, name: str
) -> None:
    poison: Poison = _PLAIN_POISONS[name]
    columns: dict[str, list[Any] | None] = {
        "job_type": ["t.noop"],
        "payload": ['{"i": 0}', '{"i": 1}', '{}'],
    }
    for column, value in poison.values.items():
        columns[column] = ['{"i": 0}', value, "{}"] if column == "payload" else [value]
    _assert_refused(app_dsn, admin, poison, columns)


def test_one_shared_head_stores_complete_rows_in_input_order_and_wakes_once(
    app_dsn: str, admin: Any, dsn: str
) -> None:
    payloads = [f'{{"i": {i}}}' for i in range(50)] + [None, "{}"]
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("listen pgjobs_wakeup")
        with psycopg.connect(app_dsn) as app, app.transaction():
            _scoped(app)
            ids = _plain(app, job_type=["t.defaults"], payload=payloads, priority=["3"])
        notes = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
        assert notes == ["q_defaults"]
    rows = admin.execute(
        "select organization, queue, priority, max_attempts, timeout_seconds, payload,"
        "       state, prechecked from pgjobs.jobs where id = any(%s) order by id",
        (ids,),
    ).fetchall()
    assert ids == sorted(ids) and len(ids) == 52
    assert rows == [
        (ORG, "q_defaults", 3, 7, 42, {"i": i} if i < 50 else {}, "queued", True)
        for i in range(52)
    ]


def test_a_limit_is_refused_in_input_order(app_dsn: str) -> None:
    with (
        psycopg.connect(app_dsn) as app,
        pytest.raises(psycopg.Error) as caught,
        app.transaction(),
    ):
        _scoped(app)
        _plain(
            app,
            job_type=["t.noop"] * 3,
            priority=[None, "7", None],
            queue=[None, None, "q\u0007"],
        )
    assert "priority must be 0-3, got 7" in (caught.value.diag.message_primary or "")


@pytest.mark.parametrize(
    "columns",
    [
        {"job_type": ["t.noop", "t.nope"]},
        {"job_type": ["t.noop", "t.noop"], "organization": [None, VICTIM]},
        {"job_type": ["t.noop", "t.disabled"]},
        {"job_type": ["t.by_payload"]},
        # The same through the one-head path (jobs that differ in payload only).
        {"job_type": ["t.nope"], "payload": ["{}", '{"a": 1}']},
        {"job_type": ["t.noop"], "payload": ["{}", '{"a": 1}'], "organization": [VICTIM]},
        {"job_type": ["t.disabled"], "payload": ["{}", '{"a": 1}']},
        {"job_type": ["t.by_payload"], "payload": ["{}", '{"a": 1}']},
    ],
    ids=[
        f"{what}{path}"
        for path in ("", ", one shared head")
        for what in ("unknown type", "other organization", "disabled type", "dedup by payload")
    ],
)
def test_enqueue_plain_writes_nothing_for_a_batch_it_cannot_check(
    app_dsn: str, admin: Any, columns: dict[str, list[Any]]
) -> None:
    with psycopg.connect(app_dsn) as app, app.transaction():
        _scoped(app)
        assert _plain(app, **columns) is None
    assert admin.execute("select count(*) from pgjobs.jobs").fetchone() == (0,)


def test_an_unscoped_tenant_gets_nothing_from_enqueue_plain(app_dsn: str, admin: Any) -> None:
    with psycopg.connect(app_dsn) as app, app.transaction():
        assert _plain(app, job_type=["t.noop"], organization=[ORG]) is None
        assert _plain(app, job_type=["t.noop"]) is None
    assert admin.execute("select count(*) from pgjobs.jobs").fetchone() == (0,)


def test_arrays_of_another_length_than_the_batch_are_refused(app_dsn: str) -> None:
    with psycopg.connect(app_dsn) as app:
        for columns in (
            {"job_type": ["t.noop", "t.noop"], "queue": ["a", "b", "c"]},
            {"job_type": None, "queue": ["a"]},
            {"job_type": ["t.noop", "t.noop"], "priority": []},
        ):
            with pytest.raises(psycopg.Error) as caught, app.transaction():
                _scoped(app)
                _plain(app, **columns)
            assert caught.value.sqlstate == "PJ001", columns


def test_an_array_of_one_element_is_every_jobs_value(app_dsn: str, admin: Any) -> None:
    with psycopg.connect(app_dsn) as app, app.transaction():
        _scoped(app)
        assert _plain(app, job_type=[]) == []
        ids = _plain(app, job_type=["t.noop"], queue=["q1", "q2", "q3"], priority=["1"])
    rows = admin.execute(
        "select job_type, queue, priority from pgjobs.jobs where id = any(%s) order by id",
        (ids,),
    ).fetchall()
    assert rows == [("t.noop", "q1", 1), ("t.noop", "q2", 1), ("t.noop", "q3", 1)]


def test_a_tenant_stores_complete_checked_rows_of_its_own_organization(
    app_dsn: str, admin: Any
) -> None:
    with psycopg.connect(app_dsn) as app, app.transaction():
        _scoped(app)
        ids = _plain(
            app,
            job_type=["t.defaults", "t.noop"],
            payload=['{"a": 1}', None],
            queue=[None, "other"],
        )
    rows = admin.execute(
        "select organization, queue, priority, max_attempts, timeout_seconds, payload,"
        "       state, prechecked, created_by from pgjobs.jobs where id = any(%s) order by id",
        (ids,),
    ).fetchall()
    assert [r[:8] for r in rows] == [
        (ORG, "q_defaults", 1, 7, 42, {"a": 1}, "queued", True),
        (ORG, "other", 2, 5, 300, {}, "queued", True),
    ]
    assert ids == sorted(ids)


def test_a_batch_of_one_kind_stores_the_rows_the_row_trigger_stores(
    app_dsn: str, admin: Any
) -> None:
    """The one-head path (0170) fills every column the jobs share once per
    statement, not by the columns' defaults: its rows equal the trigger's."""
    columns = (
        "job_type, organization, queue, priority, max_attempts, timeout_seconds, payload,"
        " state, attempt, prechecked, created_by, created_at, run_at"
    )
    with psycopg.connect(app_dsn) as app, app.transaction():
        _scoped(app)
        app.execute("select set_config('pgjobs.actor', 'alice', true)")
        ids = _plain(app, job_type=["t.defaults"], payload=['{"a": 1}', None])
        row = app.execute(
            "insert into pgjobs.jobs (job_type, payload) values ('t.defaults', '{}') returning id"
        ).fetchone()
        assert row is not None
    rows = admin.execute(
        f"select {columns} from pgjobs.jobs where id = any(%s) order by id", ([*ids, row[0]],)
    ).fetchall()
    assert rows[0][0] == "t.defaults" and rows[0][10] == "alice"
    assert rows[0][6] == {"a": 1}
    assert [r[:6] + r[7:] for r in rows] == [rows[2][:6] + rows[2][7:]] * 3


# -- the Python client ------------------------------------------------------------


def test_enqueue_many_sends_a_plain_batch_as_arrays_and_any_other_through_the_trigger(
    admin: Any,
) -> None:
    admin.execute("set track_functions = 'all'")
    plain = pgjobs.enqueue_many(
        admin, [{"job_type": "t.noop", "payload": {"i": i}} for i in range(5)]
    )
    assert _calls(admin, "enqueue_plain") == 1
    assert _calls(admin, "jobs_before_insert") == 0
    assert [r.duplicate for r in plain] == [False] * 5
    payloads = admin.execute(
        "select payload->>'i' from pgjobs.jobs where id = any(%s) order by id",
        ([r.id for r in plain],),
    ).fetchall()
    assert payloads == [(str(i),) for i in range(5)]

    # A type deduplicating by payload: enqueue_plain declines, the trigger dedups.
    first, again = pgjobs.enqueue_many(
        admin, [{"job_type": "t.by_payload", "payload": {"k": 1}}] * 2
    )
    assert _calls(admin, "enqueue_plain") >= 2
    assert _calls(admin, "jobs_before_insert") == 2
    assert (first.duplicate, again.duplicate, again.id) == (False, True, first.id)

    # Dedup keys go straight to the trigger's path.
    keyed = pgjobs.enqueue_many(admin, [{"job_type": "t.noop", "dedup_key": "k"}] * 2)
    assert [r.duplicate for r in keyed] == [False, True]
    admin.rollback()


def test_enqueue_many_of_ten_thousand_jobs_returns_their_ids_in_order(admin: Any) -> None:
    jobs = [{"job_type": "t.noop", "payload": {"i": i}} for i in range(10_000)]
    results = pgjobs.enqueue_many(admin, jobs)
    ids = [r.id for r in results]
    assert ids == sorted(ids) and len(set(ids)) == 10_000
    row = admin.execute(
        "select count(*), bool_and((payload->>'i')::int = rn - 1) from"
        " (select payload, row_number() over (order by id) as rn from pgjobs.jobs"
        "   where id = any(%s)) j",
        (ids,),
    ).fetchone()
    assert row == (10_000, True)
    admin.rollback()


def test_an_unscoped_tenant_enqueue_many_is_told_to_scope(app_dsn: str) -> None:
    with psycopg.connect(app_dsn) as app, pytest.raises(pgjobs.AccessDenied):
        pgjobs.enqueue_many(app, [{"job_type": "t.noop"}])


def test_enqueue_many_of_another_organization_is_refused(app_dsn: str, dsn: str) -> None:
    with psycopg.connect(app_dsn) as app, pytest.raises(pgjobs.AccessDenied), app.transaction():
        _scoped(app)
        pgjobs.enqueue_many(app, [{"job_type": "t.noop", "organization": VICTIM}])
    assert _jobs(dsn) == 0


# -- no per-statement parse in the insert's conditions ------------------------------


def test_no_trigger_condition_or_check_on_jobs_calls_an_sql_function(admin: Any) -> None:
    """Postgres reads, folds and inlines every WHEN clause and CHECK of a table
    again for each statement that writes it; an SQL-language function in one
    is parsed (and, folded, planned) each time, which once cost a one-row
    enqueue more than its row."""
    found = admin.execute(
        """
        with conditions as (
            select c.relname, t.tgname as name, t.tgqual as tree
              from pg_trigger t join pg_class c on c.oid = t.tgrelid
             where c.relnamespace = 'pgjobs'::regnamespace and c.relname like 'jobs%%'
               and t.tgqual is not null
            union all
            select c.relname, k.conname, k.conbin
              from pg_constraint k join pg_class c on c.oid = k.conrelid
             where c.relnamespace = 'pgjobs'::regnamespace and c.relname like 'jobs%%'
               and k.contype = 'c'
        )
        select distinct x.name, p.proname
          from conditions x
          cross join lateral regexp_matches(x.tree, ':funcid (\\d+)', 'g') as m(f)
          join pg_proc p on p.oid = m.f[1]::oid
         where p.prolang = (select oid from pg_language where lanname = 'sql')
        """
    ).fetchall()
    assert found == []
    triggers = admin.execute(
        "select tgname from pg_trigger where tgrelid = 'pgjobs.jobs_active'::regclass"
        " and not tgisinternal and tgtype & 2 = 2 and tgtype & 4 = 4"
    ).fetchall()
    assert triggers == [("jobs_before_insert",)]
    admin.rollback()
