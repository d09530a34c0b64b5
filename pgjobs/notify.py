"""Following jobs by LISTEN: ``pgjobs.subscribe``.

Events carry ids, states and numbers only (Postgres lets any role LISTEN on any
channel); read details through row-level security.
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
from pgjobs.statements.monitoring import listen_events, listen_progress

log = structlog.get_logger("pgjobs.notify")

CHANNELS = {"pgjobs_state": "state", "pgjobs_progress": "progress"}


def subscribe(
    dsn: str,
    organization: str | None = None,
    job_id: int | None = None,
    *,
    timeout: float | None = None,
    reconnect_max_seconds: float = 5.0,
) -> Iterator[dict[str, Any]]:
    """Yields state and progress events as dicts with an ``event`` key
    ('state' or 'progress'), filtered by organization and job id.

    Reconnects (with backoff) if the connection drops; events sent while it was
    down are lost, so the tables remain the truth. ``timeout`` ends the
    iteration after that many seconds without a matching event. Behind a
    transaction-mode pooler, which cannot carry LISTEN, it raises
    :class:`pgjobs.pooler.NeedsDirectConnection` (a ValueError) at once.
    """
    backoff = Backoff(cap=reconnect_max_seconds)
    while True:
        try:
            with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
                pooler.refuse_listen(conn, "pgjobs.subscribe (pgjobs listen)")
                listen_events(conn)
                listen_progress(conn)
                backoff.reset()
                while True:
                    got = False
                    for note in conn.notifies(timeout=timeout, stop_after=1):
                        got = True
                        event = _parse(note.channel, note.payload)
                        if event is not None and _matches(event, organization, job_id):
                            yield event
                    if not got and timeout is not None:
                        return
        except psycopg.OperationalError as exc:
            log.warning("subscribe_reconnect", error=str(exc), retry_in=backoff.delay)
            time.sleep(backoff.next())


def _parse(channel: str, payload: str) -> dict[str, Any] | None:
    kind = CHANNELS.get(channel)
    if kind is None:
        return None
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    event["event"] = kind
    return event


def _matches(event: dict[str, Any], organization: str | None, job_id: int | None) -> bool:
    if organization is not None and event.get("organization") != organization:
        return False
    return job_id is None or event.get("id") == job_id
