"""The SQL cron evaluator (pgjobs.cron_next) agrees with cronsim.

SQL computes a schedule's first fire time, the workers every later one with
cronsim; were the two to disagree, a schedule could skip or repeat a tick at
its first fire. So: random expressions (valid and not), random instants (many
within two days of a daylight-saving change) and time zones with every usual
kind of change (an hour, none, odd offsets), the same answer or the same
refusal from both. Not covered, because cronsim's hour-by-hour stepping has
quirks there that the SQL side does not copy: a DST shift of half an hour
(Australia/Lord_Howe), a change at midnight (America/Sao_Paulo until 2019,
America/Santiago) or at a quarter to the hour (Pacific/Chatham), where on the
day of the change an hourly or per-minute schedule's first fire can differ
(README, Dependencies).
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgjobs.errors import InvalidJob
from pgjobs.schedules import cron

ZONES = (
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Europe/Dublin",  # "negative" DST in tzdata
    "Australia/Sydney",
    "Asia/Kolkata",
    "Asia/Kathmandu",
)
RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
PLAIN = (
    ("0", "*", "*/20", "15,45"),
    ("*", "0", "30", "*/15", "5-10", "0,30"),
    ("*", "0", "1", "2", "3", "*/2", "1-3", "2,3"),
    ("*", "*", "1", "L", "15", "LW"),
    ("*", "*", "*", "3,10", "4"),
    ("*", "*", "*", "SUN", "1-5", "0#1"),
)


@functools.cache
def transitions(name: str) -> tuple[dt.datetime, ...]:
    """The instants a zone's offset changed in 2017-2027 (hourly scan)."""
    tz = zoneinfo.ZoneInfo(name)
    found = []
    t = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)
    prev = t.astimezone(tz).utcoffset()
    while t.year < 2028:
        t += dt.timedelta(hours=1)
        off = t.astimezone(tz).utcoffset()
        if off != prev:
            found.append(t)
            prev = off
    return tuple(found) or (dt.datetime(2026, 3, 29, 1, tzinfo=dt.UTC),)


def value(field: int) -> st.SearchStrategy[str]:
    low, high = RANGES[field]
    number = st.integers(low, high).map(str)
    edge = st.sampled_from([str(low - 1), str(high + 1), "00", "007"[: 2 + (field > 2)]])
    options = [number, number, number, number, edge]
    if field == 4:
        options.append(st.sampled_from(MONTHS))
    if field == 5:
        options.append(st.sampled_from(DAYS))
    return st.one_of(options)


def term(field: int) -> st.SearchStrategy[str]:
    v = value(field)
    rng = st.builds(lambda a, b: f"{a}-{b}", v, v)
    base = st.one_of(st.just("*"), v, rng)
    step = st.builds(lambda b, n: f"{b}/{n}", base, st.integers(0, 25))
    options = [st.just("*"), v, rng, step]
    if field == 3:
        options += [st.sampled_from(["L", "LW", "L/2", "LW/3"])]
    if field == 5:
        options += [
            st.builds(lambda d: f"{d}L", st.integers(0, 8)),
            st.builds(
                lambda d, n: f"{d}#{n}",
                st.one_of(st.integers(0, 7).map(str), st.sampled_from(DAYS)),
                st.integers(0, 6),
            ),
        ]
    return st.one_of(options)


def field_text(field: int) -> st.SearchStrategy[str]:
    return st.lists(term(field), min_size=1, max_size=3).map(",".join)


@st.composite
def expressions(draw: Any) -> str:
    if draw(st.integers(0, 19)) == 0:  # garbage now and then
        return draw(st.text("0123456789*/-,LW# ", min_size=0, max_size=14))
    seconds = draw(st.booleans())
    fields = []
    for index in range(0 if seconds else 1, 6):
        # Mostly common fields (hours around the usual DST changes), so that
        # most expressions are valid and many fire near a change.
        simple = draw(st.integers(0, 4)) > 1
        fields.append(draw(st.sampled_from(PLAIN[index])) if simple else draw(field_text(index)))
    return " ".join(fields)


@st.composite
def instants(draw: Any, zone: str) -> dt.datetime:
    if draw(st.booleans()):
        base = draw(st.sampled_from(transitions(zone)))
        offset = draw(st.integers(-2 * 86400, 2 * 86400))
        micro = draw(st.sampled_from([0, 0, 500_000]))
        return base + dt.timedelta(seconds=offset, microseconds=micro)
    return draw(
        st.datetimes(dt.datetime(2018, 1, 1), dt.datetime(2030, 12, 31), timezones=st.just(dt.UTC))
    )


def sql_next(conn: psycopg.Connection[Any], expr: str, zone: str, after: dt.datetime) -> Any:
    try:
        with conn.transaction():
            row = conn.execute(
                "select pgjobs.cron_next(%s, %s, %s) as t", (expr, zone, after)
            ).fetchone()
    except psycopg.Error as exc:
        assert exc.sqlstate == "PJ001", exc
        return "invalid"
    assert row is not None
    return "never" if row["t"] is None else row["t"]


def py_next(expr: str, zone: str, after: dt.datetime) -> Any:
    try:
        return cron.next_after(expr, zone, after)
    except InvalidJob as exc:
        return "never" if "never fires" in str(exc) else "invalid"


@pytest.mark.slow
@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_sql_evaluator_agrees_with_cronsim(conn: psycopg.Connection[Any], data: Any) -> None:
    zone = data.draw(st.sampled_from(ZONES))
    expr = data.draw(expressions())
    after = data.draw(instants(zone))
    assert sql_next(conn, expr, zone, after) == py_next(expr, zone, after), (expr, zone, after)


@pytest.mark.parametrize(
    ("expr", "zone", "after", "expected"),
    [
        # 02:30 Berlin is skipped on 29 March 2026: the first valid instant, 03:00 CEST.
        ("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00Z", "2026-03-29T01:00Z"),
        # ... and repeated on 25 October 2026: once, at the first (CEST) 02:30.
        ("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00Z", "2026-10-25T00:30Z"),
        ("30 2 * * *", "Europe/Berlin", "2026-10-25T00:30Z", "2026-10-26T01:30Z"),
        # Hourly schedules follow real time: both 02:30s on the fall-back day.
        ("30 * * * *", "Europe/Berlin", "2026-10-25T00:30Z", "2026-10-25T01:30Z"),
        ("*/20 * * * * *", "UTC", "2026-01-01T00:00:00.5Z", "2026-01-01T00:00:20Z"),
        ("0 0 * 2 MON#5", "UTC", "2026-01-01T00:00Z", "2044-02-29T00:00Z"),
        ("0 9 LW * *", "America/New_York", "2026-01-01T00:00Z", "2026-01-30T14:00Z"),
    ],
)
def test_known_fire_times_in_sql_and_python(
    conn: psycopg.Connection[Any], expr: str, zone: str, after: str, expected: str
) -> None:
    start = dt.datetime.fromisoformat(after)
    want = dt.datetime.fromisoformat(expected)
    assert sql_next(conn, expr, zone, start) == want
    assert py_next(expr, zone, start) == want


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "* * * *",
        "60 * * * *",
        "* 24 * * *",
        "0 0 31 2 *",
        "0 0 * * 8",
        "a b c d e",
        "*/0 * * * *",
        "0 0 * * MON#6",
        "1-0 * * * *",
        "* * * * * * *",
    ],
)
def test_invalid_expressions_are_refused_by_both(conn: psycopg.Connection[Any], expr: str) -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert sql_next(conn, expr, "UTC", now) == "invalid"
    assert py_next(expr, "UTC", now) == "invalid"
