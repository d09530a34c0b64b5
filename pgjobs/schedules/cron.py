"""Cron semantics, from cronsim and zoneinfo.

cronsim is the authority: Python validates with it and the workers advance
schedules with it. The SQL evaluator in sql/migrations/0013_schedules.sql
(``pgjobs.cron_next``) gives the same answers, which a property test checks.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import deque
from collections.abc import Iterator

from cronsim import CronSim, CronSimError

from pgjobs.errors import InvalidJob

# cronsim gives up past 50 years without a match; so do we (and the SQL side).
_WINDOWS = (
    dt.timedelta(minutes=2),
    dt.timedelta(hours=2),
    dt.timedelta(days=2),
    dt.timedelta(days=40),
    dt.timedelta(days=400),
)


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone ``name``, spelt exactly; InvalidJob otherwise."""
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name:
        raise InvalidJob(f"unknown time zone {name!r}")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidJob(f"unknown time zone {name!r}") from exc


def check(cron: str, timezone: str) -> None:
    """Raises InvalidJob unless ``cron`` parses and fires at some point."""
    next_after(cron, timezone, dt.datetime.now(dt.UTC))


def ticks_after(cron: str, timezone: str, after: dt.datetime) -> Iterator[dt.datetime]:
    """Fire times strictly after ``after`` (an aware datetime), in order, in UTC."""
    if not isinstance(cron, str) or not cron.strip() or len(cron) > 1000:
        raise InvalidJob("a cron expression is a non-empty string (5 fields, or 6 with seconds)")
    tz = zone(timezone)
    try:
        it = CronSim(cron, after.astimezone(tz))
    except CronSimError as exc:
        raise InvalidJob(f"bad cron expression {cron!r}: {exc}") from exc
    last = after
    # In Debian's wall-clock mode an instant in a repeated hour can map to a
    # wall time whose first occurrence is already past: those are skipped.
    for tick in it:  # ends (StopIteration) after 50 years without a match
        if tick > last:
            last = tick
            yield tick.astimezone(dt.UTC)


def next_after(cron: str, timezone: str, after: dt.datetime) -> dt.datetime:
    """The first fire time strictly after ``after``; InvalidJob if there is none."""
    for tick in ticks_after(cron, timezone, after):
        return tick
    raise InvalidJob(f"cron expression {cron!r} never fires")


def due_ticks(
    cron: str, timezone: str, first: dt.datetime, until: dt.datetime, limit: int
) -> list[dt.datetime]:
    """The latest ``limit`` ticks from ``first`` (itself a tick) to ``until``, oldest first.

    A long outage must not cost one step per missed tick (a per-second
    schedule down for a day): the search starts a little before ``until`` and
    widens only while it finds fewer than ``limit``.
    """
    if first > until:
        return []
    for window in (*_WINDOWS, None):
        start = first if window is None else max(first, until - window)
        found: deque[dt.datetime] = deque(maxlen=limit)
        if start == first:
            found.append(first)
        for tick in ticks_after(cron, timezone, start):
            if tick > until:
                break
            found.append(tick)
        if start == first or len(found) >= limit:
            return list(found)
    raise AssertionError("unreachable: the last window starts at first")
