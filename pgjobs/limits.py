"""Input limits, mirrored from the database (0010_trust_boundary.sql).

The database enforces every one of them for every path (plain SQL included);
these early checks only give a Python caller a clear InvalidJob before a
round trip. Keep the numbers equal to their SQL twins.
"""

from __future__ import annotations

import datetime as dt
import math
import re

from pgjobs.errors import InvalidJob

MAX_NAME_LENGTH = 200  # pgjobs.name_ok(): job types, queues, organizations
MAX_DEDUP_KEY_BYTES = 1000
MAX_TIMEOUT_SECONDS = 2_000_000  # pgjobs.max_timeout_seconds(): fits a statement_timeout
MAX_ATTEMPTS = 1000  # pgjobs.max_attempts_limit()
MAX_DEPENDENCIES = 1000
MAX_INTEGER_DIGITS = 300  # numbers in payloads: |n| < 10**300
RUN_AT_MIN = dt.datetime(1, 1, 2, tzinfo=dt.UTC)
RUN_AT_MAX = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)
BIGINT_MAX = 2**63 - 1

# C0 controls (NUL included), DEL and C1 controls: the same set as the SQL check.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _utf8(name: str, value: str) -> bytes:
    try:
        return value.encode()
    except UnicodeEncodeError as exc:
        raise InvalidJob(f"{name} is not valid Unicode text (a lone surrogate?)") from exc


def check_name(name: str, value: object) -> None:
    """A job type, queue or organization name (None is allowed: the default)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidJob(f"{name} must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_NAME_LENGTH or _CONTROL.search(value):
        raise InvalidJob(
            f"{name} must be 1-{MAX_NAME_LENGTH} characters without control characters"
        )
    _utf8(name, value)


def check_dedup_key(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidJob(f"dedup_key must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidJob("dedup_key may not contain NUL (\\x00)")
    if len(_utf8("dedup_key", value)) > MAX_DEDUP_KEY_BYTES:
        raise InvalidJob(f"dedup_key must be at most {MAX_DEDUP_KEY_BYTES} bytes")


def check_int(name: str, value: object, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJob(f"{name} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidJob(f"{name} must be {low}-{high}, got {value}")
    return value


def seconds(name: str, value: object, high: float) -> float | None:
    """A duration given as seconds or a timedelta: finite, 0 to ``high``."""
    if value is None:
        return None
    number = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise InvalidJob(f"{name} must be a number of seconds or a timedelta")
    if not math.isfinite(number) or not 0 <= number <= high:
        raise InvalidJob(f"{name} must be 0-{high:g} seconds, got {number}")
    return float(number)


def check_run_at(value: object) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        raise InvalidJob("run_at must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidJob("run_at must be timezone-aware")
    try:
        inside = RUN_AT_MIN < value < RUN_AT_MAX
    except OverflowError:  # an offset that pushes year 1 or 9999 out of range
        inside = False
    if not inside:
        raise InvalidJob("run_at must be between the years 1 and 9999")
    return value


def check_depends_on(value: object) -> list[int]:
    if value is None:
        return []
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise InvalidJob("depends_on must be a list of job ids")
    parents = list(value)
    if len(parents) > MAX_DEPENDENCIES:
        raise InvalidJob(f"depends_on may name at most {MAX_DEPENDENCIES} jobs")
    for parent in parents:
        if isinstance(parent, bool) or not isinstance(parent, int):
            raise InvalidJob(f"depends_on must hold job ids, got {parent!r}")
        if not 1 <= parent <= BIGINT_MAX:
            raise InvalidJob(f"depends_on names no job: {parent}")
    return parents
