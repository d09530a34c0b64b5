"""Following jobs by LISTEN: ``pgjobs.subscribe``.

Events carry ids, states and numbers only (Postgres lets any role LISTEN on any
channel); read details through row-level security.

A notification is a hint, never a fact: any role may NOTIFY on any channel,
with any payload. A payload that is not a well-formed event is dropped. An
event saying a job ended (completed, dead, canceled) is read back from the
jobs table under the subscriber's own scope and yielded only if the row says
so, with ``"hint": False`` and the row's organization; every other event is
yielded as it came, marked ``"hint": True`` (progress and intermediate states
are frequent and soon superseded; read the job when it matters).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import structlog

from pgjobs import pooler
from pgjobs.reconnect import Backoff
from pgjobs.statements import run
from pgjobs.statements.monitoring import listen_events, listen_progress, state_confirm
from pgjobs.states import TERMINAL, State

log = structlog.get_logger("pgjobs.notify")

APPLICATION_NAME = "pgjobs subscribe"  # how an operator (or a test) finds these sessions
CHANNELS = {"pgjobs_state": "state", "pgjobs_progress": "progress"}
_MAX_ID = 2**63 - 1
_STATES = frozenset(s.value for s in State)
ENDS = frozenset(s.value for s in TERMINAL)


def subscribe(
    dsn: str,
    organization: str | None = None,
    job_id: int | None = None,
    *,
    timeout: float | None = None,
    reconnect_max_seconds: float = 5.0,
) -> Iterator[dict[str, Any]]:
    """Yields state and progress events as dicts with an ``event`` key
    ('state' or 'progress') and a ``hint`` key (see the module docstring),
    filtered by organization and job id.

    Reconnects (with backoff) if the connection drops; events sent while it was
    down are lost, so the tables remain the truth. ``timeout`` ends the
    iteration after that many seconds without a matching event. Behind a
    transaction-mode pooler, which cannot carry LISTEN, it raises
    :class:`pgjobs.pooler.NeedsDirectConnection` (a ValueError) at once.
    """
    backoff = Backoff(cap=reconnect_max_seconds)
    while True:
        try:
            with psycopg.connect(
                dsn, autocommit=True, prepare_threshold=None, application_name=APPLICATION_NAME
            ) as conn:
                pooler.refuse_listen(conn, "pgjobs.subscribe (pgjobs listen)")
                listen_events(conn)
                listen_progress(conn)
                backoff.reset()
                while True:
                    # Read out before the next statement: the iterator holds the connection.
                    notes = list(conn.notifies(timeout=timeout, stop_after=1))
                    for note in notes:
                        event = parse(note.channel, note.payload)
                        if event is not None and event["state"] in ENDS:
                            event = _confirmed(conn, event)
                        if event is not None and matches(event, organization, job_id):
                            yield event
                    if not notes and timeout is not None:
                        return
        except psycopg.OperationalError as exc:
            log.warning("subscribe_reconnect", error=str(exc), retry_in=backoff.delay)
            time.sleep(backoff.next())


def parse(channel: str, payload: str) -> dict[str, Any] | None:
    """The event a payload describes, or None if it is not one pgjobs could send."""
    kind = CHANNELS.get(channel)
    if kind is None:
        return None
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON, a number past the digit limit, too deep
        return None
    if not isinstance(event, dict):
        return None
    job_id, org, state = event.get("id"), event.get("organization"), event.get("state")
    if type(job_id) is not int or not 0 < job_id <= _MAX_ID:
        return None
    if (org is not None and type(org) is not str) or state not in _STATES:
        return None
    if kind == "progress":
        progress = event.get("progress")
        if isinstance(progress, bool) or not isinstance(progress, int | float):
            return None
        if not 0 <= progress <= 100:
            return None
    event["event"] = kind
    event["hint"] = True
    return event


def _confirmed(conn: psycopg.Connection[Any], event: dict[str, Any]) -> dict[str, Any] | None:
    """A job's end, as the subscriber may read it in the table; None if the
    row (visible to this role) does not say so."""
    try:
        found = run(conn, state_confirm.bind(job_id=event["id"]))
    except psycopg.errors.InsufficientPrivilege:
        found = []  # a role that may not read jobs learns no end from a NOTIFY
    return confirmed(event, found)


def confirmed(event: dict[str, Any], found: list[Any]) -> dict[str, Any] | None:
    """The event once its row is read back (both faces of subscribe)."""
    row = found[0] if found else None
    if row is None or row["state"] != event["state"]:
        log.debug("subscribe_event_unconfirmed", job_id=event["id"], state=event["state"])
        return None
    event.update(row)
    event["hint"] = False
    return event


def matches(event: dict[str, Any], organization: str | None, job_id: int | None) -> bool:
    if organization is not None and event.get("organization") != organization:
        return False
    return job_id is None or event.get("id") == job_id
