"""How the worker's sessions are made: the one place a connection is opened
and configured. Every other piece asks for a session by purpose.

Bookkeeping sessions (claims, completions, heartbeats, rescues) commit
asynchronously: a database crash may forget their last fraction of a second,
which puts those jobs back to run again (at least once), never loses one, and
spares every batch a wait for the disk. A job's own transaction
(``bookkeeping=False``) commits as the server says, since it carries the
handler's writes. Bookkeeping sessions also turn JIT off: once the jobs table
is large, the planner's cost estimates pass the JIT threshold and short
statements spend milliseconds being compiled (two fifths of the workers'
database time in a long sustained run).

Settings are made once per session here, or, through a transaction-mode
pooler (:mod:`pgjobs.pooler`), once per transaction: :func:`resolve` decides
the mode once per worker, and :func:`connect` opens the session it calls for.
:func:`direct` says whether a session's backend pid is really the server
process serving it (what lets the rescuer end a dead worker's sessions).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import psycopg

from pgjobs import pooler
from pgjobs.faults import Retry
from pgjobs.reconnect import with_backoff
from pgjobs.statements import Bound, arun, run
from pgjobs.statements.sessions import session_configure
from pgjobs.worker.config import WorkerConfig

# A connection attempt that hangs (a host that drops packets) is abandoned
# after this long and retried, so a loop waiting for its database stays
# responsive to SIGTERM.
_CONNECT_TIMEOUT_SECONDS = 10


def worker_name(pid: int | None = None) -> str:
    return f"{socket.gethostname()}/{pid or os.getpid()}"


def direct(cfg: WorkerConfig) -> bool:
    """Whether this worker's sessions are server processes of their own, so
    that ``pg_backend_pid()`` names the process to terminate. Behind a
    transaction pooler the pid is whichever server session ran the last
    statement: a pooler mode answers False here, and the rescuer then leaves
    sessions alone (the statement timeout ends a dead attempt's query)."""
    return not cfg.pooler


def resolve(cfg: WorkerConfig) -> WorkerConfig:
    """``cfg`` with its pooler mode decided (the setting, ``PGJOBS_POOLER``, else
    detected on one connection); pooled, wake-ups come by polling."""
    pooled = cfg.pooler if cfg.pooler is not None else pooler.mode_from_env()
    if pooled is None:
        with psycopg.connect(cfg.dsn, autocommit=True, prepare_threshold=None) as conn:
            pooled = pooler.behind_pooler(conn)
    if not pooled:
        return dataclasses.replace(cfg, pooler=False)
    return dataclasses.replace(cfg, pooler=True, listen=False, poll_seconds=cfg.pooler_poll_seconds)


def connect(
    cfg: WorkerConfig,
    purpose: str,
    *,
    autocommit: bool = True,
    bookkeeping: bool = True,
    timeout_seconds: float | None = None,
) -> psycopg.Connection[Any]:
    """A configured session for ``purpose`` (shown in pg_stat_activity).

    ``timeout_seconds`` bounds its statements and idle transactions (default:
    the worker's statement timeout) and, when given, the connection attempt."""
    options = _options(timeout_seconds)
    settings = _configure(cfg, purpose, bookkeeping, timeout_seconds)
    if cfg.pooler:
        return pooler.connect(cfg.dsn, settings=settings.params, autocommit=autocommit, **options)
    conn = psycopg.connect(cfg.dsn, autocommit=autocommit, **options)
    if cfg.pooler is False:
        pooler.remember(conn, False)  # decided already: spares pgjobs.pooler's probe
    run(conn, settings)
    if not autocommit:
        conn.commit()
    return conn


async def aconnect(cfg: WorkerConfig, purpose: str) -> psycopg.AsyncConnection[Any]:
    """:func:`connect` for the async lane: an autocommit bookkeeping session.

    Behind a pooler (``cfg.pooler``) its statements are never prepared; its
    writes (progress, checkpoints, cancel polls) are single autocommit
    statements, which need none of the session settings a pooler loses."""
    options: dict[str, Any] = {"prepare_threshold": None} if cfg.pooler else {}
    conn = await psycopg.AsyncConnection.connect(cfg.dsn, autocommit=True, **options)
    if not cfg.pooler:
        await arun(conn, _configure(cfg, purpose, True, None))
    return conn


def _options(timeout_seconds: float | None) -> dict[str, Any]:
    if timeout_seconds is None:
        return {"connect_timeout": _CONNECT_TIMEOUT_SECONDS}
    return {"connect_timeout": max(1, int(timeout_seconds))}


def _configure(
    cfg: WorkerConfig, purpose: str, bookkeeping: bool, timeout_seconds: float | None
) -> Bound[None]:
    seconds = cfg.statement_timeout_seconds if timeout_seconds is None else timeout_seconds
    return session_configure.bind(
        statement_timeout_ms=int(seconds * 1000),
        application_name=f"pgjobs {purpose} {os.getpid()}",
        synchronous_commit="off" if bookkeeping else None,
        jit="off" if bookkeeping else None,
    )


def connect_until_up(
    cfg: WorkerConfig,
    purpose: str,
    *,
    log: Any,
    event: str,
    stop: Callable[[], bool],
    setup: Callable[[psycopg.Connection[Any]], None] = lambda conn: None,
    wait: Callable[[float], object] = time.sleep,
    retry: Retry | None = None,
) -> psycopg.Connection[Any]:
    """:func:`connect` (then ``setup``), retried with backoff until it works or
    ``stop()`` says to give up (then the connection error propagates); an
    error that waiting does not clear raises :class:`pgjobs.faults.Fatal`.
    ``retry`` carries the backoff of a fault already under way."""

    def attempt(_: Retry) -> psycopg.Connection[Any]:
        conn = connect(cfg, purpose)
        try:
            setup(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    return with_backoff(attempt, log=log, event=event, stop=stop, wait=wait, retry=retry)
