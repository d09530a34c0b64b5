"""Enqueue: a row in the caller's transaction, with the job type's defaults,
exact JSON, race-free dedup, and a clear InvalidJob for bad input."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow, tuple_row

import pgjobs
from pgjobs import registry
from tests.support import factories
from tests.support import handlers as _handlers  # registers the t.* job types
from tests.support.databases import databases

assert _handlers

Conn = psycopg.Connection[DictRow]


@pytest.fixture
def tx(conn: Conn) -> Conn:
    """The rolled-back ``conn``, with every registered job type written in it.

    The registry remembers per database which types it already wrote; on the
    shared database each test's rollback takes them away again (see
    test_enqueue_after_a_rolled_back_enqueue_of_the_same_type_still_works).
    """
    registry.sync(conn)
    return conn


def _count(conn: psycopg.Connection[Any], table: str = "pgjobs.jobs") -> int:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(f"select count(*) from {table}").fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])


def _job(conn: psycopg.Connection[Any], job_id: int) -> pgjobs.Job:
    return pgjobs.get(conn, job_id)


# -- transactions -------------------------------------------------------------


def test_job_enqueued_in_a_rolled_back_transaction_never_exists(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        job_id = pgjobs.enqueue(conn, "t.noop", {"n": 1}).id
        single = pgjobs.enqueue_many(conn, [{"job_type": "t.noop"}, {"job_type": "t.noop"}])
        conn.rollback()
    with psycopg.connect(dsn) as other:
        assert _count(other) == 0
        for jid in [job_id, *(r.id for r in single)]:
            with pytest.raises(pgjobs.JobNotFound):
                pgjobs.get(other, jid)


def test_committed_job_exists_queued(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        job_id = pgjobs.enqueue(conn, "t.noop", {"n": 1}).id
        conn.commit()
    with psycopg.connect(dsn) as other:
        job = pgjobs.get(other, job_id)
    assert job["state"] == "queued"
    assert job["attempt"] == 0
    assert job["payload"] == {"n": 1}


def test_pgjobs_never_commits_the_callers_transaction(dsn: str) -> None:
    with psycopg.connect(dsn) as conn, psycopg.connect(dsn, autocommit=True) as other:
        one = pgjobs.enqueue(conn, "t.noop", {"n": 1}, dedup_key="k")
        many = pgjobs.enqueue_many(conn, [{"job_type": "t.noop", "payload": {"n": 2}}])
        pgjobs.get(conn, one.id)
        pgjobs.list_jobs(conn)
        pgjobs.cancel(conn, many[0].id)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert _count(other) == 0, "another session sees the jobs before the commit"
        assert _count(other, "pgjobs.dedup_keys") == 0
        conn.commit()
        assert _count(other) == 2
        states = dict(other.execute("select id, state from pgjobs.jobs").fetchall())
    assert states == {one.id: "queued", many[0].id: "canceled"}


def test_enqueue_after_a_rolled_back_enqueue_of_the_same_type_still_works(dsn: str) -> None:
    registry.forget_synced()
    with psycopg.connect(dsn) as conn:
        pgjobs.enqueue(conn, "t.noop")
        conn.rollback()
        job_id = pgjobs.enqueue(conn, "t.noop").id
        conn.commit()
    with psycopg.connect(dsn) as other:
        assert pgjobs.get(other, job_id)["state"] == "queued"


# -- rows ---------------------------------------------------------------------

_COMPARED = (
    "select to_jsonb(j) - 'id' - 'created_at' - 'run_at' as row from pgjobs.jobs j where id = %s"
)


def test_insert_sql_function_and_python_make_identical_rows(tx: Conn) -> None:
    payload = {"order": 42, "lines": [{"sku": "a", "qty": 1}], "note": "l'été"}
    insert_id = tx.execute(
        "insert into pgjobs.jobs (job_type, payload, organization) "
        "values ('t.defaults', %s::jsonb, 'acme') returning id",
        (psycopg.types.json.Jsonb(payload),),
    ).fetchone()["id"]
    function_id = tx.execute(
        "select pgjobs.enqueue(job_type => 't.defaults', payload => %s::jsonb, "
        "organization => 'acme') as id",
        (psycopg.types.json.Jsonb(payload),),
    ).fetchone()["id"]
    python_id = pgjobs.enqueue(tx, "t.defaults", payload, organization="acme").id
    many_id = pgjobs.enqueue_many(
        tx, [{"job_type": "t.defaults", "payload": payload, "organization": "acme"}]
    )[0].id
    rows = [
        tx.execute(_COMPARED, (i,)).fetchone()["row"]
        for i in (insert_id, function_id, python_id, many_id)
    ]
    assert len({insert_id, function_id, python_id, many_id}) == 4
    assert rows[0]["payload"] == payload
    assert rows[0]["state"] == "queued"
    for row in rows[1:]:
        assert row == rows[0]


def test_job_type_defaults_apply(tx: Conn) -> None:
    job = _job(tx, pgjobs.enqueue(tx, "t.defaults").id)
    assert (job["queue"], job["priority"], job["max_attempts"], job["timeout_seconds"]) == (
        "q_defaults",
        1,
        7,
        42,
    )
    assert job["payload"] == {}
    assert job["organization"] is None
    sql_id = tx.execute("select pgjobs.enqueue('t.defaults') as id").fetchone()["id"]
    sql_job = _job(tx, sql_id)
    assert (
        sql_job["queue"],
        sql_job["priority"],
        sql_job["max_attempts"],
        sql_job["timeout_seconds"],
    ) == ("q_defaults", 1, 7, 42)


def test_explicit_zero_is_honoured(tx: Conn) -> None:
    jt = tx.execute("select * from pgjobs.job_types where name = 't.zeros'").fetchone()
    assert (
        jt["priority"],
        jt["timeout_seconds"],
        jt["dedup_window_seconds"],
        jt["max_attempts"],
    ) == (0, 0, 0, 1)
    by_default = _job(tx, pgjobs.enqueue(tx, "t.zeros").id)
    assert (by_default["priority"], by_default["timeout_seconds"], by_default["max_attempts"]) == (
        0,
        0,
        1,
    )
    # 0 given per job overrides a type whose defaults are not 0.
    explicit = _job(tx, pgjobs.enqueue(tx, "t.defaults", priority=0, timeout=0, max_attempts=1).id)
    assert (explicit["priority"], explicit["timeout_seconds"], explicit["max_attempts"]) == (
        0,
        0,
        1,
    )
    from_sql = _job(
        tx,
        tx.execute(
            "select pgjobs.enqueue('t.defaults', priority => 0::smallint, timeout_seconds => 0, "
            "max_attempts => 1) as id"
        ).fetchone()["id"],
    )
    assert (from_sql["priority"], from_sql["timeout_seconds"], from_sql["max_attempts"]) == (
        0,
        0,
        1,
    )
    zero_delay = _job(tx, pgjobs.enqueue(tx, "t.defaults", delay=0).id)
    assert zero_delay["run_at"] <= tx.execute("select now() as t").fetchone()["t"] + dt.timedelta(
        seconds=1
    )


def test_dedup_window_zero_frees_the_key_once_the_job_is_finished(tx: Conn) -> None:
    first = pgjobs.enqueue(tx, "t.zeros", dedup_key="k")
    assert pgjobs.enqueue(tx, "t.zeros", dedup_key="k") == (first.id, True), (
        "an active job always blocks its duplicate"
    )
    factories.move(tx, first.id, "running")
    factories.move(tx, first.id, "completed")
    second = pgjobs.enqueue(tx, "t.zeros", dedup_key="k")
    assert second.duplicate is False and second.id != first.id
    # The same finish with a one-hour window keeps blocking.
    held = pgjobs.enqueue(tx, "t.windowed", dedup_key="k")
    factories.move(tx, held.id, "running")
    factories.move(tx, held.id, "completed")
    assert pgjobs.enqueue(tx, "t.windowed", dedup_key="k") == (held.id, True)


# -- bad input ------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_input_dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """One database for every bad-input case: none of them may write a row."""
    with databases.database(server_dsn, "badinput", template=template_db) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            registry.sync(conn)
            factories.make_job(conn, "queued", organization="other-org")
        yield dsn


class _Unjsonable:
    pass


def _other_org_job(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select id from pgjobs.jobs where organization = 'other-org'").fetchone()
    assert row is not None
    return int(row[0])


BAD: dict[str, Callable[[psycopg.Connection[Any]], object]] = {
    "unknown type": lambda c: pgjobs.enqueue(c, "t.no_such_type"),
    "disabled type": lambda c: pgjobs.enqueue(c, "t.disabled"),
    "payload is a list": lambda c: pgjobs.enqueue(c, "t.noop", [1, 2]),  # type: ignore[arg-type]
    "payload is a string": lambda c: pgjobs.enqueue(c, "t.noop", '{"a": 1}'),  # type: ignore[arg-type]
    "payload is a set": lambda c: pgjobs.enqueue(c, "t.noop", {1, 2}),  # type: ignore[arg-type]
    "set inside": lambda c: pgjobs.enqueue(c, "t.noop", {"s": {1, 2}}),
    "bytes inside": lambda c: pgjobs.enqueue(c, "t.noop", {"b": b"raw"}),
    "object inside": lambda c: pgjobs.enqueue(c, "t.noop", {"o": _Unjsonable()}),
    "NaN": lambda c: pgjobs.enqueue(c, "t.noop", {"x": math.nan}),
    "infinity": lambda c: pgjobs.enqueue(c, "t.noop", {"x": [1.0, math.inf]}),
    "NaN Decimal": lambda c: pgjobs.enqueue(c, "t.noop", {"x": decimal.Decimal("NaN")}),
    "NUL in a value": lambda c: pgjobs.enqueue(c, "t.noop", {"s": "a\x00b"}),
    "NUL in a key": lambda c: pgjobs.enqueue(c, "t.noop", {"a\x00": 1}),
    "non-string key": lambda c: pgjobs.enqueue(c, "t.noop", {1: "x"}),
    "too deep": lambda c: pgjobs.enqueue(c, "t.noop", _nested(100)),
    "priority 5": lambda c: pgjobs.enqueue(c, "t.noop", priority=5),
    "priority -1": lambda c: pgjobs.enqueue(c, "t.noop", priority=-1),
    "priority 1.5": lambda c: pgjobs.enqueue(c, "t.noop", priority=1.5),  # type: ignore[arg-type]
    "priority True": lambda c: pgjobs.enqueue(c, "t.noop", priority=True),
    "max_attempts 0": lambda c: pgjobs.enqueue(c, "t.noop", max_attempts=0),
    "negative timeout": lambda c: pgjobs.enqueue(c, "t.noop", timeout=-1),
    "negative delay": lambda c: pgjobs.enqueue(c, "t.noop", delay=-1),
    "negative timedelta delay": lambda c: pgjobs.enqueue(
        c, "t.noop", delay=dt.timedelta(seconds=-5)
    ),
    "naive run_at": lambda c: pgjobs.enqueue(c, "t.noop", run_at=dt.datetime(2030, 1, 1)),
    "depends_on unknown id": lambda c: pgjobs.enqueue(
        c, "t.noop", depends_on=[2**40], dedup_key="dep"
    ),
    "depends_on another organization's job": lambda c: pgjobs.enqueue(
        c, "t.noop", organization="acme", depends_on=[_other_org_job(c)]
    ),
    "NUL in organization": lambda c: pgjobs.enqueue(c, "t.noop", organization="a\x00"),
    "float too large to round-trip": lambda c: pgjobs.enqueue(
        c, "t.noop", {"f": 1.7976931348623157e308}
    ),
    "many: one bad among good": lambda c: pgjobs.enqueue_many(
        c,
        [
            {"job_type": "t.noop", "payload": {"n": 1}, "dedup_key": "fine"},
            {"job_type": "t.noop", "payload": {"n": 2}, "priority": 9},
        ],
    ),
    "many: one unknown type among good": lambda c: pgjobs.enqueue_many(
        c,
        [
            {"job_type": "t.noop", "payload": {"n": 1}, "dedup_key": "fine"},
            {"job_type": "t.no_such_type"},
        ],
    ),
    # enqueue_many takes a dict of a job_type (and a payload) inline once its
    # type was met: what it refuses there, it refuses as any other job.
    "many: a bad payload after a good one of its type": lambda c: pgjobs.enqueue_many(
        c, [{"job_type": "t.noop"}, {"job_type": "t.noop", "payload": {"f": float("nan")}}]
    ),
    "many: a payload that is not an object after a good one": lambda c: pgjobs.enqueue_many(
        c, [{"job_type": "t.noop"}, {"job_type": "t.noop", "payload": [1]}]
    ),
    "many: NUL in a payload key after a good job": lambda c: pgjobs.enqueue_many(
        c, [{"job_type": "t.noop"}, {"job_type": "t.noop", "payload": {"a\x00": "b"}}]
    ),
    "many: a job_type that is not a string": lambda c: pgjobs.enqueue_many(
        c, [{"job_type": "t.noop"}, {"job_type": ["t.noop"]}]
    ),
    "many: a job that is not a mapping": lambda c: pgjobs.enqueue_many(
        c, [{"job_type": "t.noop"}, ("job_type", "t.noop")]  # type: ignore[list-item]
    ),
    "many: one bad dependency among good": lambda c: pgjobs.enqueue_many(
        c,
        [
            {"job_type": "t.noop", "dedup_key": "fine"},
            {"job_type": "t.noop", "depends_on": [2**40]},
        ],
    ),
}


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_invalid_job_and_writes_nothing(bad_input_dsn: str, case: str) -> None:
    # Autocommit: anything a failed call managed to write would be there to count.
    with psycopg.connect(bad_input_dsn, autocommit=True) as conn:
        before = (_count(conn), _count(conn, "pgjobs.dedup_keys"))
        with pytest.raises(pgjobs.InvalidJob):
            BAD[case](conn)
        after = (_count(conn), _count(conn, "pgjobs.dedup_keys"))
    assert after == before


@pytest.mark.parametrize(
    "call",
    [
        "select pgjobs.enqueue('t.no_such_type')",
        "select pgjobs.enqueue('t.disabled')",
        "select pgjobs.enqueue('t.noop', payload => '[1, 2]')",
        "select pgjobs.enqueue('t.noop', priority => 5::smallint)",
        "select pgjobs.enqueue('t.noop', depends_on => array[1099511627776]::bigint[])",
        "insert into pgjobs.jobs (job_type, state) values ('t.noop', 'running')",
    ],
)
def test_bad_input_through_sql_is_refused_with_pj001(bad_input_dsn: str, call: str) -> None:
    with psycopg.connect(bad_input_dsn, autocommit=True) as conn:
        before = _count(conn)
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(call)  # type: ignore[arg-type]
        assert caught.value.sqlstate == "PJ001", caught.value
        assert _count(conn) == before


# -- bulk and dedup -------------------------------------------------------------


def test_enqueue_many_returns_results_in_input_order_with_duplicates(tx: Conn) -> None:
    existing = pgjobs.enqueue(tx, "t.noop", {"n": 0}, dedup_key="old")
    results = pgjobs.enqueue_many(
        tx,
        [
            {"job_type": "t.noop", "payload": {"n": 1}, "dedup_key": "a"},
            {"job_type": "t.noop", "payload": {"n": 2}},
            {"job_type": "t.noop", "payload": {"n": 3}, "dedup_key": "a"},
            {"job_type": "t.noop", "payload": {"n": 4}, "dedup_key": "old"},
            {"job_type": "t.defaults", "payload": {"n": 5}, "priority": 3},
            {"job_type": "t.noop", "payload": {"n": 6}, "dedup_key": "b"},
        ],
    )
    assert [r.duplicate for r in results] == [False, False, True, True, False, False]
    assert results[2].id == results[0].id
    assert results[3].id == existing.id
    fresh = [results[i].id for i in (0, 1, 4, 5)]
    assert len(set(fresh)) == 4 and existing.id not in fresh
    # Each new id is the row made from that input.
    for i, n in zip((0, 1, 4, 5), (1, 2, 5, 6), strict=True):
        assert _job(tx, results[i].id)["payload"] == {"n": n}
    assert _job(tx, results[4].id)["priority"] == 3
    assert (
        tx.execute(
            "select count(*) as n from pgjobs.jobs where job_type in ('t.noop', 't.defaults')"
        ).fetchone()["n"]
        == 5
    )
    assert pgjobs.enqueue_many(tx, []) == []


def test_same_dedup_key_twice_returns_the_first_job(tx: Conn) -> None:
    first = pgjobs.enqueue(tx, "t.noop", {"v": 1}, organization="acme", dedup_key="report:10")
    again = pgjobs.enqueue(tx, "t.noop", {"v": 2}, organization="acme", dedup_key="report:10")
    assert first.duplicate is False
    assert again == (first.id, True)
    via_sql = tx.execute(
        "select pgjobs.enqueue('t.noop', organization => 'acme', dedup_key => 'report:10') as id"
    ).fetchone()["id"]
    assert via_sql == first.id
    assert (
        tx.execute(
            "select count(*) as n from pgjobs.jobs where dedup_key = 'report:10'"
        ).fetchone()["n"]
        == 1
    )
    assert _job(tx, first.id)["payload"] == {"v": 1}


def test_same_dedup_key_in_two_organizations_makes_two_jobs(tx: Conn) -> None:
    a = pgjobs.enqueue(tx, "t.noop", organization="acme", dedup_key="k")
    b = pgjobs.enqueue(tx, "t.noop", organization="globex", dedup_key="k")
    system = pgjobs.enqueue(tx, "t.noop", dedup_key="k")
    assert not a.duplicate and not b.duplicate and not system.duplicate
    assert len({a.id, b.id, system.id}) == 3
    orgs = {_job(tx, i)["organization"] for i in (a.id, b.id, system.id)}
    assert orgs == {"acme", "globex", None}


# -- JSON -------------------------------------------------------------------------

ROUND_TRIP: dict[str, Any] = {
    "nested": {"a": {"b": {"c": [1, {"d": None}, [], {}]}}},
    "unicode": "héllo wörld ✓ 日本語 🎉 \u200b",
    "escapes": 'quote " backslash \\ newline \n tab \t',
    "looks_like_json": '{"not": "an object"}',
    "big_int": 2**63 + 1,
    "negative_big_int": -(2**70),
    "floats": [0.1, 1e-300, 9007199254740991.0, -2.5, 0.0],
    "bools": [True, False],
    "empty_string": "",
    "key with spaces and ü": 1,
}


def test_payload_round_trips_exactly_without_double_encoding(tx: Conn) -> None:
    ids = [
        pgjobs.enqueue(tx, "t.noop", ROUND_TRIP).id,
        pgjobs.enqueue_many(tx, [{"job_type": "t.noop", "payload": ROUND_TRIP}])[0].id,
    ]
    for job_id in ids:
        row = tx.execute(
            "select payload, jsonb_typeof(payload) as kind, "
            "payload->>'looks_like_json' as text, jsonb_typeof(payload->'big_int') as num "
            "from pgjobs.jobs where id = %s",
            (job_id,),
        ).fetchone()
        assert row["kind"] == "object"
        assert row["num"] == "number"
        assert row["text"] == '{"not": "an object"}'
        assert row["payload"] == ROUND_TRIP
        assert pgjobs.get(tx, job_id)["payload"] == ROUND_TRIP


def test_datetime_decimal_uuid_are_encoded_as_documented(tx: Conn) -> None:
    when = dt.datetime(2026, 10, 1, 12, 30, tzinfo=dt.UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    payload = {
        "when": when,
        "day": dt.date(2026, 10, 1),
        "at": dt.time(8, 15),
        "amount": decimal.Decimal("12.50"),
        "id": ident,
        "pair": (1, 2),
    }
    job_id = pgjobs.enqueue(tx, "t.noop", payload).id
    assert _job(tx, job_id)["payload"] == {
        "when": "2026-10-01T12:30:00+00:00",
        "day": "2026-10-01",
        "at": "08:15:00",
        "amount": "12.50",
        "id": "12345678-1234-5678-1234-567812345678",
        "pair": [1, 2],
    }


def test_dedup_by_payload_hashes_dates_decimals_and_uuids(tx: Conn) -> None:
    def payload(amount: str) -> dict[str, Any]:
        return {
            "when": dt.datetime(2026, 10, 1, tzinfo=dt.UTC),
            "amount": decimal.Decimal(amount),
            "id": uuid.UUID(int=7),
            "nested": {"b": 2, "a": [1, {"z": 0, "y": 1}]},
        }

    first = pgjobs.enqueue(tx, "t.by_payload", payload("9.99"))
    same = pgjobs.enqueue(tx, "t.by_payload", payload("9.99"))
    reordered = pgjobs.enqueue(tx, "t.by_payload", dict(reversed(payload("9.99").items())))
    other = pgjobs.enqueue(tx, "t.by_payload", payload("10.00"))
    many = pgjobs.enqueue_many(
        tx,
        [
            {"job_type": "t.by_payload", "payload": payload("9.99")},
            {"job_type": "t.by_payload", "payload": payload("0.01")},
        ],
    )
    assert first.duplicate is False
    assert same == (first.id, True)
    assert reordered == (first.id, True), "key order is not part of the hash"
    assert other.duplicate is False and other.id != first.id
    assert many[0] == (first.id, True)
    assert many[1].duplicate is False
    assert (
        tx.execute(
            "select count(*) as n from pgjobs.jobs where job_type = 't.by_payload'"
        ).fetchone()["n"]
        == 3
    )


# -- registration -----------------------------------------------------------------


@pytest.fixture
def scratch_registry() -> Iterator[registry.Registry]:
    """A registry of the test's own, current while it runs: its registrations
    vanish with it."""
    with registry.Registry().active() as types:
        yield types


def test_handler_that_cannot_be_imported_is_refused_on_enqueue_and_sync(
    conn: Conn, scratch_registry: registry.Registry
) -> None:
    def handler(ctx: pgjobs.JobContext) -> None:
        return None

    handler.__module__ = "tests.no_such_module"
    handler.__qualname__ = "handler"
    scratch_registry.job("t.unimportable")(handler)
    before = _count(conn)
    with pytest.raises(pgjobs.InvalidJob, match="cannot be imported"):
        pgjobs.enqueue(conn, "t.unimportable")
    with pytest.raises(pgjobs.InvalidJob, match="cannot be imported"):
        pgjobs.enqueue_many(conn, [{"job_type": "t.unimportable"}])
    with pytest.raises(pgjobs.InvalidJob, match="cannot be imported"):
        scratch_registry.sync(conn)
    assert _count(conn) == before
    assert (
        conn.execute(
            "select count(*) as n from pgjobs.job_types where name = 't.unimportable'"
        ).fetchone()["n"]
        == 0
    )


def test_nested_function_cannot_be_registered(scratch_registry: registry.Registry) -> None:
    def handler(ctx: pgjobs.JobContext) -> None:
        return None

    with pytest.raises(pgjobs.InvalidJob, match="module-level"):
        scratch_registry.job("t.nested")(handler)
    assert "t.nested" not in scratch_registry.registered()


def test_enqueue_wakes_each_queue_once_per_transaction_at_commit(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener, psycopg.connect(dsn) as conn:
        listener.execute("listen pgjobs_wakeup")
        pgjobs.enqueue(conn, "t.noop")
        pgjobs.enqueue_many(conn, [{"job_type": "t.noop"}, {"job_type": "t.other_queue"}] * 3)
        pgjobs.enqueue(conn, "t.noop", delay=3600)  # queued too, for later: its queue is woken
        assert list(listener.notifies(timeout=0.2)) == []  # nothing before the commit
        conn.commit()
        heard = sorted(n.payload for n in listener.notifies(timeout=1.0, stop_after=3))
    assert heard == ["default", "q_other"]
