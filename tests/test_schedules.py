"""Periodic jobs on one connection, with the clock injected: creation and bad
input, one job per tick with its history, clock steps, downtime and catch-up,
pause/resume/trigger, the two DST days, the normal enqueue path (dedup), and a
broken schedule that must not block the others."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

import pgjobs
from pgjobs import registry
from pgjobs.schedules.fire import fire_due
from tests.support import factories

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
MIN = dt.timedelta(minutes=1)


def at(conn: psycopg.Connection[Any], name: str, when: dt.datetime) -> None:
    """Moves a schedule's next fire time to a tick of the test's choosing."""
    conn.execute("update pgjobs.schedules set next_fire_at = %s where name = %s", (when, name))


def jobs_of(conn: psycopg.Connection[Any], name: str) -> list[dict[str, Any]]:
    return conn.execute(
        "select f.fire_at, f.job_id, f.duplicate, j.organization, j.job_type, j.payload"
        "  from pgjobs.schedule_fires f left join pgjobs.jobs j on j.id = f.job_id"
        " where f.schedule = %s and not f.manual order by f.fire_at",
        (name,),
    ).fetchall()


def row(conn: psycopg.Connection[Any], name: str) -> dict[str, Any]:
    found = conn.execute("select * from pgjobs.schedule_status where name = %s", (name,)).fetchone()
    assert found is not None
    return found


@pytest.fixture
def noop(conn: psycopg.Connection[Any]) -> str:
    factories.ensure_type(conn)
    return factories.JOB_TYPE


def test_schedule_in_sql_and_python_returns_the_next_fire_time(
    conn: psycopg.Connection[Any], noop: str
) -> None:
    sql_next = conn.execute(
        "select pgjobs.schedule('nightly', %s, '0 6 * * *', '{\"k\": 1}', 'acme',"
        " 'Europe/Berlin') as t",
        (noop,),
    ).fetchone()["t"]
    now = conn.execute("select now() as t").fetchone()["t"]
    assert sql_next == pgjobs.schedules.cron.next_after("0 6 * * *", "Europe/Berlin", now)
    assert sql_next.astimezone(dt.timezone(dt.timedelta(hours=1))).hour == 6  # 06:00 CET
    py_next = pgjobs.schedule(conn, "every-5", noop, "*/5 * * * *", {"a": [1]}, organization="acme")
    assert py_next.minute % 5 == 0 and py_next > now
    listed = {r["name"]: r for r in pgjobs.list_schedules(conn, organization="acme")}
    assert listed["nightly"]["next_fire_at"] == sql_next
    assert listed["every-5"]["next_fire_at"] == py_next
    assert listed["nightly"]["timezone"] == "Europe/Berlin" and listed["nightly"]["enabled"]
    # Updating with the same rule keeps the next fire time; a new rule moves it.
    assert pgjobs.schedule(conn, "every-5", noop, "*/5 * * * *", organization="acme") == py_next
    # (minute 3 is never a five-minute tick, so the two differ at any hour)
    hourly = pgjobs.schedule(conn, "every-5", noop, "3 * * * *", organization="acme")
    assert hourly.minute == 3 and hourly != py_next


@pytest.mark.parametrize(
    ("cron", "zone", "job_type"),
    [
        ("61 * * * *", "UTC", factories.JOB_TYPE),
        ("* * * *", "UTC", factories.JOB_TYPE),
        ("0 0 30 2 *", "UTC", factories.JOB_TYPE),
        ("0 6 * * *", "Mars/Olympus", factories.JOB_TYPE),
        ("0 6 * * *", "europe/berlin", factories.JOB_TYPE),  # zoneinfo spells it exactly
        ("0 6 * * *", "UTC", "no.such.type"),
    ],
)
def test_bad_input_is_invalid_job_and_writes_nothing(
    conn: psycopg.Connection[Any], noop: str, cron: str, zone: str, job_type: str
) -> None:
    with pytest.raises(pgjobs.InvalidJob), conn.transaction():
        pgjobs.schedule(conn, "bad", job_type, cron, organization="acme", timezone=zone)
    with pytest.raises(psycopg.Error) as caught, conn.transaction():
        conn.execute(
            "select pgjobs.schedule('bad', %s, %s, organization => 'acme', timezone => %s)",
            (job_type, cron, zone),
        )
    assert caught.value.sqlstate == "PJ001"
    with pytest.raises(psycopg.Error) as caught, conn.transaction():  # a plain INSERT too
        conn.execute(
            "insert into pgjobs.schedules (name, organization, job_type, cron, timezone)"
            " values ('bad', 'acme', %s, %s, %s)",
            (job_type, cron, zone),
        )
    assert caught.value.sqlstate == "PJ001"
    assert conn.execute("select count(*) as n from pgjobs.schedules").fetchone()["n"] == 0


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(json.loads('{"a": ' * 40 + "1" + "}" * 40), id="nested 40 deep"),
        pytest.param({"n": 10**300}, id="a 301-digit number"),
        pytest.param({"s": "x" * (1 << 20)}, id="over 1 MB"),
    ],
)
def test_a_payload_no_job_could_carry_is_refused_by_the_schedule(
    conn: psycopg.Connection[Any], noop: str, payload: dict[str, Any]
) -> None:
    """A schedule holds the payload of the jobs it fires: one that the jobs'
    own checks refuse (pgjobs.payload_problem) is refused when the schedule is
    written, not at every tick ever after."""
    for statement in (
        "select pgjobs.schedule('deep', %(t)s, '* * * * *', %(p)s, organization => 'acme')",
        "insert into pgjobs.schedules (name, organization, job_type, cron, payload)"
        " values ('deep', 'acme', %(t)s, '* * * * *', %(p)s)",
        "select pgjobs.enqueue(%(t)s, %(p)s, organization => 'acme')",
    ):
        with pytest.raises(psycopg.Error) as caught, conn.transaction():
            conn.execute(statement, {"t": noop, "p": Jsonb(payload)})
        assert caught.value.sqlstate == "PJ001", statement
    assert conn.execute("select count(*) as n from pgjobs.schedules").fetchone()["n"] == 0


def test_each_tick_fires_one_ordinary_job_whose_history_names_the_schedule(
    conn: psycopg.Connection[Any], noop: str
) -> None:
    pgjobs.schedule(conn, "tick", noop, "* * * * *", {"report": "x"}, organization="acme")
    at(conn, "tick", T0)
    assert fire_due(conn, now=T0 - dt.timedelta(seconds=1)) == []  # not due yet
    fired = fire_due(conn, now=T0 + dt.timedelta(seconds=10))
    assert [(f.name, f.fire_at, f.organization) for f in fired] == [("tick", T0, "acme")]
    assert fire_due(conn, now=T0 + dt.timedelta(seconds=20)) == []  # the same tick: nothing
    fire_due(conn, now=T0 + MIN + dt.timedelta(seconds=1))
    made = jobs_of(conn, "tick")
    assert [m["fire_at"] for m in made] == [T0, T0 + MIN]
    assert all(m["organization"] == "acme" and m["payload"] == {"report": "x"} for m in made)
    job = pgjobs.get(conn, made[0]["job_id"])
    assert job["state"] == "queued" and job["queue"] == "default"  # the type's defaults
    history = pgjobs.history(conn, made[0]["job_id"])
    assert history[0]["message"] == "fired by schedule 'tick' for 2026-01-01T00:00:00Z"
    status = row(conn, "tick")
    assert status["last_fired_at"] == T0 + MIN and status["next_fire_at"] == T0 + 2 * MIN
    assert status["last_job_id"] == made[1]["job_id"] and status["last_job_state"] == "queued"


def test_a_clock_stepped_back_never_fires_a_tick_twice(
    conn: psycopg.Connection[Any], noop: str
) -> None:
    pgjobs.schedule(conn, "tick", noop, "* * * * *", organization="acme")
    at(conn, "tick", T0)
    for minute in (0, 1, 2):
        fire_due(conn, now=T0 + minute * MIN)
    for back in (T0 + 2 * MIN, T0 + MIN, T0 - 10 * MIN):  # the clock steps back
        assert fire_due(conn, now=back) == []
    # Even a schedule rewound to a tick that already fired makes no second job:
    # the fire row of (schedule, tick) is unique.
    at(conn, "tick", T0 + MIN)
    fired = fire_due(conn, now=T0 + MIN)
    assert [f.job_id for f in fired] == []
    assert [m["fire_at"] for m in jobs_of(conn, "tick")] == [T0, T0 + MIN, T0 + 2 * MIN]
    assert row(conn, "tick")["next_fire_at"] == T0 + 2 * MIN  # moved on past the rewind


@pytest.mark.parametrize(("catch_up", "expected"), [(None, 1), (5, 5), (1000, 61)])
def test_an_hour_of_downtime_fires_the_latest_tick_or_up_to_catch_up(
    conn: psycopg.Connection[Any], noop: str, catch_up: int | None, expected: int
) -> None:
    pgjobs.schedule(conn, "tick", noop, "* * * * *", organization="acme", catch_up=catch_up)
    at(conn, "tick", T0)
    back = T0 + 60 * MIN + dt.timedelta(seconds=30)  # no worker from T0 to T0 + 1 h
    fire_due(conn, now=back)
    ticks = [m["fire_at"] for m in jobs_of(conn, "tick")]
    assert ticks == [T0 + (61 - expected + i) * MIN for i in range(expected)]  # the latest
    assert row(conn, "tick")["next_fire_at"] == T0 + 61 * MIN
    assert fire_due(conn, now=back) == []


def test_pause_resume_and_trigger(conn: psycopg.Connection[Any], noop: str) -> None:
    pgjobs.schedule(conn, "tick", noop, "*/10 * * * *", organization="acme")
    at(conn, "tick", T0)
    pgjobs.pause_schedule(conn, "tick", organization="acme")
    assert not row(conn, "tick")["enabled"]
    assert fire_due(conn, now=T0 + 35 * MIN) == []  # paused: nothing fires
    job_id = pgjobs.trigger_schedule(conn, "tick", organization="acme")  # paused or not
    assert pgjobs.get(conn, job_id)["organization"] == "acme"
    assert "triggered from schedule 'tick'" in pgjobs.history(conn, job_id)[0]["message"]
    status = row(conn, "tick")
    assert status["next_fire_at"] == T0 and status["last_job_id"] == job_id  # not moved
    assert pgjobs.resume_schedule(conn, "tick", organization="acme") == T0
    fired = fire_due(conn, now=T0 + 35 * MIN)  # the latest tick missed while paused
    assert [f.fire_at for f in fired] == [T0 + 30 * MIN]
    assert row(conn, "tick")["next_fire_at"] == T0 + 40 * MIN
    pgjobs.unschedule(conn, "tick", organization="acme")
    assert pgjobs.list_schedules(conn) == []
    for verb in (
        pgjobs.pause_schedule,
        pgjobs.resume_schedule,
        pgjobs.trigger_schedule,
        pgjobs.unschedule,
    ):
        with pytest.raises(pgjobs.JobNotFound), conn.transaction():
            verb(conn, "tick", organization="acme")


def simulate(conn: psycopg.Connection[Any], start: dt.datetime, hours: int) -> None:
    now = start
    while now <= start + dt.timedelta(hours=hours):
        fire_due(conn, now=now)
        now += dt.timedelta(minutes=15)


def test_0230_berlin_fires_once_at_three_on_spring_forward_and_once_on_fall_back(
    conn: psycopg.Connection[Any], noop: str
) -> None:
    pgjobs.schedule(
        conn, "night", noop, "30 2 * * *", organization="acme", timezone="Europe/Berlin"
    )
    spring = dt.datetime(2026, 3, 28, 12, tzinfo=UTC)
    at(conn, "night", pgjobs.schedules.cron.next_after("30 2 * * *", "Europe/Berlin", spring))
    simulate(conn, spring, 48)
    # 28 March 02:30 is gone; on the 29th 02:30 does not exist: 03:00 CEST, the
    # first valid instant after it (Debian cron's rule, cronsim's and ours).
    assert [m["fire_at"] for m in jobs_of(conn, "night")] == [
        dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 03:00 CEST
        dt.datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
    ]
    conn.execute("delete from pgjobs.schedule_fires")
    autumn = dt.datetime(2026, 10, 24, 12, tzinfo=UTC)
    at(conn, "night", pgjobs.schedules.cron.next_after("30 2 * * *", "Europe/Berlin", autumn))
    simulate(conn, autumn, 48)
    # 25 October has 02:30 twice (CEST, then CET): it fires once, at the first.
    assert [m["fire_at"] for m in jobs_of(conn, "night")] == [
        dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 02:30 CEST
        dt.datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # 02:30 CET
    ]


def test_fires_go_through_enqueue_dedup(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "insert into pgjobs.job_types (name, handler, dedup_by_payload)"
        " values ('t.once', 'tests.support.handlers:noop', true)"
    )
    pgjobs.schedule(conn, "tick", "t.once", "* * * * *", {"a": 1}, organization="acme")
    at(conn, "tick", T0)
    fire_due(conn, now=T0)
    fire_due(conn, now=T0 + MIN)  # the first job is still queued: a duplicate
    made = jobs_of(conn, "tick")
    assert [m["duplicate"] for m in made] == [False, True]
    assert made[0]["job_id"] == made[1]["job_id"]
    assert conn.execute("select count(*) as n from pgjobs.jobs").fetchone()["n"] == 1


def test_a_broken_schedule_records_its_error_and_blocks_no_other(
    conn: psycopg.Connection[Any], noop: str
) -> None:
    conn.execute(
        "insert into pgjobs.job_types (name, handler) "
        "values ('t.off', 'tests.support.handlers:noop')"
    )
    pgjobs.schedule(conn, "broken", "t.off", "* * * * *", organization="acme")
    pgjobs.schedule(conn, "fine", noop, "* * * * *", organization="acme")
    at(conn, "broken", T0)
    at(conn, "fine", T0)
    conn.execute("update pgjobs.job_types set enabled = false where name = 't.off'")
    fired = {f.name: f for f in fire_due(conn, now=T0)}
    assert fired["fine"].job_id is not None
    assert "disabled" in (fired["broken"].error or "")
    broken = row(conn, "broken")
    assert "disabled" in broken["last_error"] and broken["next_fire_at"] == T0 + MIN
    assert fire_due(conn, now=T0) == []  # moved on: no retry loop on the same tick


def test_a_job_type_declares_its_system_schedule_when_registered(
    conn: psycopg.Connection[Any],
) -> None:
    spec = registry.JobType(
        name="t.nightly",
        handler="tests.support.handlers:noop",
        schedule="0 6 * * *",
        schedule_timezone="Europe/Berlin",
    )
    registry.upsert(conn, spec)
    first = row(conn, "t.nightly")
    assert first["organization"] is None and first["job_type"] == "t.nightly"
    assert first["cron"] == "0 6 * * *" and first["timezone"] == "Europe/Berlin"
    at(conn, "t.nightly", T0)  # overdue, as after a night without workers
    registry.upsert(conn, spec)  # a worker restarts: the due tick is kept
    assert row(conn, "t.nightly")["next_fire_at"] == T0
    registry.upsert(conn, spec.__class__(**{**spec.__dict__, "schedule": "0 7 * * *"}))
    assert row(conn, "t.nightly")["next_fire_at"] > T0
    with pytest.raises(pgjobs.InvalidJob):
        pgjobs.job("t.bad_schedule", schedule="0 25 * * *")(factories_noop)


def factories_noop(ctx: Any) -> None:
    return None
