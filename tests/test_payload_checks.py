"""The payload check's fast path (exact types first, pgjobs.payload._check)
accepts and refuses exactly what the general test does."""

from __future__ import annotations

import decimal
from typing import Any

import pytest

import pgjobs
from pgjobs import payload


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"x": value}
    return value


def _general(value: object, depth: int) -> None:
    """The general test alone: every level through the isinstance chain."""
    original = payload._check
    payload._check = payload._check_any  # type: ignore[assignment]
    try:
        payload._check_any(value, depth)
    finally:
        payload._check = original  # type: ignore[assignment]


_VALUES = {
    **{f"dict of str {d} deep": _nested(d, "s") for d in (30, 31, 32)},
    **{f"dict of dict {d} deep": _nested(d, {}) for d in (30, 31, 32)},
    **{f"dict of int {d} deep": _nested(d, 7) for d in (30, 31, 32)},
    **{f"dict of None {d} deep": _nested(d, None) for d in (30, 31, 32)},
    "NUL in a value": {"k": "a\x00"},
    "NUL in a key": {"a\x00": "v"},
    "NUL in a nested key": {"o": {"a\x00": 1}},
    "a key that is not a string": {1: "v"},
    "a huge int": {"n": 10**400},
    "a huge negative int": {"n": -(10**400)},
    "a bool": {"b": True, "c": [False, None]},
    "a float too large": {"f": 1e300},
    "NaN": {"f": float("nan")},
    "a Decimal": {"d": decimal.Decimal("1.5")},
    "a set": {"s": {1}},
    "a tuple and a list": {"t": (1, "a"), "l": [1, {"k": "v"}]},
}


@pytest.mark.parametrize("name", list(_VALUES))
def test_the_fast_check_agrees_with_the_general_one(name: str) -> None:
    value = _VALUES[name]
    outcomes = []
    for check in (payload._check, _general):
        try:
            check(value, 1)
            outcomes.append(None)
        except pgjobs.InvalidJob as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]
