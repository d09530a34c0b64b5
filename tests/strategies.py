"""Hypothesis strategies for hostile input to enqueue, shared by every surface
that takes a job (the Python API and the CLI here; an async API later).

Each strategy mixes valid values with the hostile ones an attacker or a buggy
caller would send: names past the limits or with control characters, payloads
too large, too deep or with numbers Python cannot read back, times out of range,
wrong types. Whatever is drawn, the caller must get a result or InvalidJob /
AccessDenied, and nothing written on a refusal.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

from hypothesis import strategies as st

JOB_TYPE = "a.type"  # registered in the database by the tests that use these
ORG = "org-A"  # the organization the caller is scoped to

HOSTILE_TEXT = st.sampled_from(
    [
        "",
        "x" * 201,
        "x" * 8000,
        "\x00",
        "nul\x00byte",
        "esc\x1b[2Jclear",
        "bell\x07",
        "c1\x9bcsi",
        "line\nbreak",
        "'; drop table pgjobs.jobs; --",
        "\ud800",  # a lone surrogate: not encodable as UTF-8
        "🎉" * 200,
        "org-B",
    ]
)
NAMES = st.one_of(
    st.none(),
    st.text(max_size=30),
    HOSTILE_TEXT,
    st.integers(),
    st.binary(max_size=4),
)

_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**305), max_value=10**305),
    st.floats(),
    st.text(max_size=20),
    st.decimals(),
    st.datetimes(),
    st.uuids(),
    st.binary(max_size=4),
    st.sampled_from([{1, 2}, object(), "\ud800"]),
    st.builds(pow, st.just(10), st.just(4400)),  # built: its repr alone would raise
)
JSON_VALUES = st.recursive(
    _LEAVES,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), children, max_size=3)
    ),
    max_leaves=10,
)


def _nested(depth: int) -> dict[str, Any]:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return {"x": value}


PAYLOADS = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4),
    st.sampled_from(
        [
            _nested(40),
            _nested(5000),
            {"big": "a" * 1_100_000},
            {"n": 10**300},
            {"n": 10**299},
            {"f": float("inf")},
            {"f": 2.0**60},
            {"d": decimal.Decimal("NaN")},
            {"u": uuid.UUID(int=1), "t": dt.date(2026, 1, 1)},
        ]
    ),
    JSON_VALUES,
    st.text(max_size=10),
)

_NUMBERS = st.one_of(
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 3, 4, -1, 1000, 1001, 2_000_000, 3_000_000, 2**31, 2**63]),
    st.floats(),
    st.booleans(),
    st.text(max_size=3),
)
_TIMES = st.one_of(
    st.none(),
    st.datetimes(timezones=st.timezones()),
    st.datetimes(),  # naive
    st.sampled_from(
        [
            dt.datetime.max.replace(tzinfo=dt.UTC),
            dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=14))),
        ]
    ),
    st.text(max_size=5),
)
_DURATIONS = st.one_of(
    st.none(),
    st.floats(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.timedeltas(),
    st.sampled_from([3_000_000, 2_000_000, 10**20]),
    st.text(max_size=3),
)
_PARENTS = st.one_of(
    st.none(),
    st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=3),
    st.lists(st.sampled_from(["1", None, 1.5, True]), max_size=2),
    st.just(list(range(1, 1100))),
    st.text(max_size=3),
    st.integers(),
)

OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "organization": NAMES,
        "queue": NAMES,
        "priority": _NUMBERS,
        "run_at": _TIMES,
        "delay": _DURATIONS,
        "dedup_key": NAMES,
        "depends_on": _PARENTS,
        "max_attempts": _NUMBERS,
        "timeout": _DURATIONS,
    },
)
JOB_TYPES = st.one_of(st.just(JOB_TYPE), NAMES)

# The CLI takes text only: each option as a string an attacker could type.
_CLI_TEXT = st.one_of(
    st.text(max_size=12).filter(lambda s: not s.startswith("-")),
    HOSTILE_TEXT.filter(lambda s: "\x00" not in s and not s.startswith("-")),
    st.sampled_from(["1", "0", "4", "-1", "3000000", "1" + "0" * 30, "nan", "1e400"]),
)
CLI_PAYLOADS = st.one_of(
    st.sampled_from(
        [
            "{}",
            '{"a": 1}',
            "[1]",
            "not json",
            '{"n": 1' + "0" * 5000 + "}",
            '{"x": ' + "[" * 5000 + "]" * 5000 + "}",
            '{"s": "\\u0000"}',
            '{"f": 1e400}',
        ]
    ),
    st.text(max_size=20),
)
CLI_OPTIONS = st.dictionaries(
    st.sampled_from(
        [
            "--org",
            "--queue",
            "--priority",
            "--delay",
            "--dedup-key",
            "--depends-on",
            "--max-attempts",
            "--timeout",
        ]
    ),
    _CLI_TEXT,
    max_size=4,
)
