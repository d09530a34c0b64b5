"""Server-sent events fed by LISTEN, read back through row-level security.

One thread per app LISTENs on ``pgjobs_state`` and ``pgjobs_progress``. A
notification is only a hint (any role may NOTIFY on any channel, and its
organization field is whatever the sender wrote): it wakes the streams that may
care, and each stream then reads the row under its own viewer's scope and sends
what it read, never what the notification said. Wake-ups are debounced (a burst
of progress notes costs one read), a stream that hears nothing still reads
every ``poll_seconds`` (notifications can be lost: a restart, a pooler without
LISTEN), and the listener reconnects with backoff when Postgres goes away,
waking every stream on its return since what happened meanwhile went unheard.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import structlog

from pgjobs import sql

log = structlog.get_logger("pgjobs.web.sse")

DEBOUNCE_SECONDS = 0.2
POLL_SECONDS = 3.0
KEEPALIVE_SECONDS = 15.0


class Waiter:
    """One stream's doorbell: rung from the listener thread, awaited on the loop."""

    def __init__(
        self, job_id: int | None, organization: str | None, *, debounce: float = DEBOUNCE_SECONDS
    ) -> None:
        self.job_id = job_id
        self.organization = organization
        self.debounce = debounce
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def ring(self) -> None:
        self.loop.call_soon_threadsafe(self.event.set)

    def wants(self, job_id: object, organization: object) -> bool:
        if self.job_id is not None:
            return job_id == self.job_id
        # Organization streams: the hint narrows who re-reads; a forged hint
        # only costs a read that RLS answers truthfully.
        return self.organization is None or organization == self.organization

    async def wait(self, timeout: float) -> bool:
        """True when rung (after the debounce), False when the poll interval ran out."""
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            return False
        await asyncio.sleep(self.debounce)
        self.event.clear()
        return True


class Listener:
    """The app's single LISTEN connection, started on the first subscriber."""

    def __init__(self, dsn: str, *, reconnect_max_seconds: float = 2.0) -> None:
        self.dsn = dsn
        self.reconnect_max_seconds = reconnect_max_seconds
        self._waiters: set[Waiter] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    def subscribe(self, waiter: Waiter) -> None:
        with self._lock:
            self._waiters.add(waiter)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name="pgjobs-web-listen", daemon=True
                )
                self._thread.start()

    def unsubscribe(self, waiter: Waiter) -> None:
        with self._lock:
            self._waiters.discard(waiter)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _ring(
        self, job_id: object = None, organization: object = None, everyone: bool = False
    ) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for waiter in waiters:
            if everyone or waiter.wants(job_id, organization):
                waiter.ring()

    def _run(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(sql.query("listen_events"))
                    conn.execute(sql.query("listen_progress"))
                    self.connected.set()
                    delay = 0.1
                    self._ring(everyone=True)  # whatever happened while not listening
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._note(note.payload)
            except psycopg.Error as exc:
                self.connected.clear()
                log.warning("web_listen_reconnect", error=str(exc).strip(), retry_in=delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max_seconds)
        self.connected.clear()

    def _note(self, payload: str) -> None:
        try:
            hint = json.loads(payload)
        except (ValueError, RecursionError):  # anyone may NOTIFY: too deep is no event either
            return
        if isinstance(hint, dict):
            self._ring(hint.get("id"), hint.get("organization"))


def frame(event: str, data: Any) -> str:
    from pgjobs.web.records import dumps

    return f"event: {event}\ndata: {dumps(data)}\n\n"


async def stream(
    listener: Listener,
    waiter: Waiter,
    read: Callable[[], Awaitable[tuple[str, Any, bool]]],
    *,
    poll_seconds: float = POLL_SECONDS,
) -> AsyncIterator[str]:
    """Sends ``read()``'s (event, data) whenever data changed; ends after a
    final read says ``done``. A failed read (Postgres away) is retried on the
    next wake-up or poll; the stream itself stays open."""
    listener.subscribe(waiter)
    last: Any = None
    quiet = 0.0
    try:
        yield "retry: 2000\n\n"
        while True:
            try:
                event, data, done = await read()
            except psycopg.Error as exc:
                log.info("web_stream_read_failed", error=str(exc).strip())
                event, data, done = "", last, False
            if event and data != last:
                yield frame(event, data)
                last, quiet = data, 0.0
            if done:
                yield frame("end", {})
                return
            if not await waiter.wait(poll_seconds):
                quiet += poll_seconds
                if quiet >= KEEPALIVE_SECONDS:
                    yield ": keepalive\n\n"
                    quiet = 0.0
    finally:
        listener.unsubscribe(waiter)
