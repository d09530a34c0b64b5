"""``pgjobs.aio.subscribe`` and ``pgjobs.aio.wait``: LISTEN with asyncio.

The parsing, filtering, checks and reads are the blocking ones
(:mod:`pgjobs.notify`, :mod:`pgjobs.waiting`); only the waiting is awaited.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import structlog

from pgjobs import _conn
from pgjobs.notify import APPLICATION_NAME, ENDS, confirmed, matches, parse
from pgjobs.reconnect import Backoff
from pgjobs.records import Job
from pgjobs.statements import arun
from pgjobs.statements.monitoring import listen_events, listen_progress, state_confirm
from pgjobs.steps import adrive
from pgjobs.waiting import APPLICATION_NAME as WAIT_NAME
from pgjobs.waiting import Plan, listener_conninfo

log = structlog.get_logger("pgjobs.notify")


async def subscribe(
    dsn: str,
    organization: str | None = None,
    job_id: int | None = None,
    *,
    timeout: float | None = None,
    reconnect_max_seconds: float = 5.0,
) -> AsyncIterator[dict[str, Any]]:
    """Yields state and progress events, as :func:`pgjobs.subscribe` does.

    Reconnects (with backoff) if the connection drops; events sent while it was
    down are lost, so the tables remain the truth. ``timeout`` ends the
    iteration after that many seconds without a matching event. An event saying
    a job ended is read back from the table first (``"hint": False``); others
    are hints (``"hint": True``). Unlike the blocking face it does not probe for
    a transaction-mode pooler: give it a direct connection.
    """
    backoff = Backoff(cap=reconnect_max_seconds)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, prepare_threshold=None, application_name=APPLICATION_NAME
            ) as conn:
                await arun(conn, listen_events.bind())
                await arun(conn, listen_progress.bind())
                backoff.reset()
                while True:
                    # Read out before the next statement: the iterator holds the connection.
                    notes = [n async for n in conn.notifies(timeout=timeout, stop_after=1)]
                    for note in notes:
                        event = parse(note.channel, note.payload)
                        if event is not None and event["state"] in ENDS:
                            event = await _confirmed(conn, event)
                        if event is not None and matches(event, organization, job_id):
                            yield event
                    if not notes and timeout is not None:
                        return
        except psycopg.OperationalError as exc:
            log.warning("subscribe_reconnect", error=str(exc), retry_in=backoff.delay)
            await asyncio.sleep(backoff.next())


async def _confirmed(
    conn: psycopg.AsyncConnection[Any], event: dict[str, Any]
) -> dict[str, Any] | None:
    """A job's end, read back as :func:`pgjobs.notify` does (a hint until then)."""
    try:
        found = await arun(conn, state_confirm.bind(job_id=event["id"]))
    except psycopg.errors.InsufficientPrivilege:
        found = []
    return confirmed(event, found)


async def wait(
    conn_or_dsn: Any,
    job_id: int,
    timeout: float | None = None,
    *,
    organization: str | None = None,
    poll_seconds: float = 1.0,
) -> Job:
    """:func:`pgjobs.wait`, awaitable: the job once it has finished;
    WaitTimeout (a TimeoutError) after ``timeout`` seconds."""
    plan = Plan(job_id, timeout, organization, poll_seconds)
    if isinstance(conn_or_dsn, str):
        async with await psycopg.AsyncConnection.connect(
            conn_or_dsn, autocommit=True, application_name=WAIT_NAME
        ) as own:
            return await _wait(own, own, plan)
    reader = await _conn.araw(conn_or_dsn)
    try:
        listener = await psycopg.AsyncConnection.connect(
            listener_conninfo(reader), autocommit=True
        )
    except psycopg.Error:
        return await _wait(reader, None, plan)  # polling only
    async with listener:
        return await _wait(reader, listener, plan)


async def _wait(
    reader: psycopg.AsyncConnection[Any],
    listener: psycopg.AsyncConnection[Any] | None,
    plan: Plan,
) -> Job:
    if listener is not None:
        await arun(listener, listen_events.bind())
    own = reader is listener
    while True:
        if own and plan.organization is not None:
            async with reader.transaction():
                job = await adrive(reader, plan.read(reader.info, True))
        else:
            job = await adrive(reader, plan.read(reader.info, False))
        if plan.finished(job):
            return job
        pause = plan.pause(listener is not None)
        if listener is None:
            await asyncio.sleep(pause)
            continue
        async for note in listener.notifies(timeout=pause):
            if plan.is_hint(note.channel, note.payload):
                break
