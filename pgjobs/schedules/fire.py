"""Firing due schedules: any live worker, no leader.

One short transaction per round: lock the due schedules no other worker holds
(``FOR UPDATE SKIP LOCKED``), work out with cronsim which ticks to fire and the
next fire time, and write it all in one statement (``pgjobs.schedule_fire``).
Two guards make a second job for one tick impossible: a schedule moves only
if it still holds the next fire time this worker read, and each tick's fire
row is unique, committed with its job or not at all. A worker killed mid-fire
leaves nothing (its transaction dies with it), so the next worker fires the
same ticks. The database clock is the only clock (``now`` is injectable).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row

from pgjobs import sql
from pgjobs.errors import InvalidJob
from pgjobs.schedules import cron

logger = structlog.get_logger("pgjobs.schedules")

# The longest a worker goes without looking, so a schedule made meanwhile (by
# another process) is noticed within this much; sooner when one is due sooner.
CHECK_SECONDS = 1.0
_MIN_WAIT_SECONDS = 0.02


@dataclasses.dataclass(frozen=True)
class Fired:
    organization: str | None
    name: str
    fire_at: dt.datetime | None
    job_id: int | None
    duplicate: bool | None
    error: str | None


def _plan(row: dict[str, Any]) -> dict[str, Any]:
    """The ticks one due schedule fires now and its next fire time after them."""
    now = row["now"]
    try:
        ticks = cron.due_ticks(
            row["cron"], row["timezone"], row["next_fire_at"], now, row["catch_up"]
        )
        following = cron.next_after(row["cron"], row["timezone"], now)
    except InvalidJob as exc:
        # Written by a path that skipped validation, or a zone this machine
        # lacks: park it far ahead and say why, rather than fail every round.
        logger.warning(
            "schedule_unusable",
            organization=row["organization"],
            schedule=row["name"],
            error=str(exc),
        )
        ticks, following = [], dt.datetime.max.replace(tzinfo=dt.UTC)
    return {
        "organization": row["organization"],
        "name": row["name"],
        "expected": row["next_fire_at"].isoformat(),
        "next_fire_at": following.isoformat(),
        "ticks": [t.isoformat() for t in ticks],
    }


def fire_due(
    conn: psycopg.Connection[Any], *, now: dt.datetime | None = None, limit: int = 100
) -> list[Fired]:
    """Fires every due schedule this session can see (up to ``limit``), in one
    transaction of the caller's connection (a savepoint inside an open one)."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        due = cur.execute(sql.query("schedule_due_lock"), {"now": now, "limit": limit}).fetchall()
        if not due:
            return []
        fires = json.dumps([_plan(row) for row in due])
        rows = cur.execute(sql.query("schedule_fire"), {"fires": fires, "now": now}).fetchall()
    fired = [Fired(**row) for row in rows]
    for f in fired:
        if f.error is not None:
            logger.warning(
                "schedule_fire_failed", organization=f.organization, schedule=f.name, error=f.error
            )
        else:
            logger.info(
                "schedule_fired",
                organization=f.organization,
                schedule=f.name,
                fire_at=f.fire_at.isoformat() if f.fire_at else None,
                job_id=f.job_id,
                duplicate=f.duplicate,
            )
    return fired


def seconds_until_due(conn: psycopg.Connection[Any], *, now: dt.datetime | None = None) -> float:
    """Seconds until the soonest enabled schedule is due (0 if one is due)."""
    row = conn.execute(sql.query("schedule_next_due"), {"now": now}).fetchone()
    if row is None or row[0] is None:
        return float("inf")
    return max(float(row[0]), 0.0)


class Firer:
    """The worker's hook: call :meth:`tick` from a periodic loop; it fires when
    something is due and otherwise costs one cheap query a second."""

    def __init__(self) -> None:
        self.next_check = 0.0

    def tick(self, conn: psycopg.Connection[Any]) -> None:
        if time.monotonic() < self.next_check:
            return
        try:
            fired = fire_due(conn)
            wait = 0.0 if fired else min(seconds_until_due(conn), CHECK_SECONDS)
        except psycopg.OperationalError:
            raise  # the caller reconnects
        except psycopg.Error as exc:
            # A schema without schedules (not migrated yet) or a role without
            # the grants: say so now and then, never stop the worker for it.
            logger.warning("schedule_check_failed", error=str(exc).strip())
            wait = 60.0
        self.next_check = time.monotonic() + max(wait, _MIN_WAIT_SECONDS)
