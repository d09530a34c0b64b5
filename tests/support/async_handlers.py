"""Async handlers for the async worker tests (tests/test_aio_worker.py).

Workers import this module (``--import tests.support.async_handlers``). The
start hook makes one async connection pool per worker process and records
itself in ``aio_hooks``; every job writes through that pool into ``aio_runs``
the pool's identity and its event loop's, so a test can tell that each
process made its resources once and every job reused them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

import pgjobs

QUEUE = "aio"
SIDE_TABLES = """
create table if not exists aio_hooks (pid int not null, token text not null, loop bigint not null);
create table if not exists aio_runs (
    job_id bigint not null, attempt int not null, pid int not null, token text not null,
    loop bigint not null, at timestamptz not null default clock_timestamp());
create table if not exists aio_progress (job_id bigint not null, n int not null);
"""

_pool: AsyncConnectionPool | None = None
_token = ""
hooks_run: list[str] = []


@pgjobs.on_worker_start
async def open_pool() -> None:
    global _pool, _token
    _token = uuid.uuid4().hex
    hooks_run.append(_token)
    dsn = os.environ.get("PGJOBS_DSN")
    if dsn is None:  # pgjobs.testing in the test process: no worker database
        return
    _pool = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False)
    await _pool.open()
    async with _pool.connection() as conn:
        await conn.execute(
            "insert into aio_hooks values (%s, %s, %s)",
            (os.getpid(), _token, id(asyncio.get_running_loop())),
        )


async def _record(ctx: pgjobs.AsyncJobContext) -> None:
    assert _pool is not None, "the start hook did not run"
    async with _pool.connection() as conn:
        await conn.execute(
            "insert into aio_runs (job_id, attempt, pid, token, loop) values (%s, %s, %s, %s, %s)",
            (ctx.id, ctx.attempt, os.getpid(), _token, id(asyncio.get_running_loop())),
        )


@pgjobs.job("aio.sleep", queue=QUEUE, max_attempts=3)
async def sleep(ctx: pgjobs.AsyncJobContext, seconds: float = 0.2) -> dict[str, Any]:
    """Records its run, then sleeps (long enough for many to be in flight at once)."""
    await _record(ctx)
    await asyncio.sleep(seconds)
    await ctx.progress(100, "slept")
    return {"slept": seconds, "pid": os.getpid()}


@pgjobs.job("aio.forever", queue=QUEUE, max_attempts=3, timeout=1)
async def forever(ctx: pgjobs.AsyncJobContext) -> None:
    """Sleeps until cancelled (by a cancel, or by its 1 s timeout)."""
    await _record(ctx)
    while True:
        await asyncio.sleep(0.05)


@pgjobs.job("aio.idle", queue=QUEUE, max_attempts=3)
async def idle(ctx: pgjobs.AsyncJobContext) -> None:
    """Sleeps until cancelled; no timeout of its own to speak of."""
    await _record(ctx)
    await asyncio.sleep(3600)


@pgjobs.job("aio.stubborn", queue=QUEUE, max_attempts=3)
async def stubborn(ctx: pgjobs.AsyncJobContext) -> None:
    """Ignores its cancellation: only the kill of its process stops it."""
    await _record(ctx)
    while True:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            continue


@pgjobs.job("aio.steps", queue=QUEUE)
async def steps(ctx: pgjobs.AsyncJobContext, n: int = 3) -> dict[str, int]:
    """Reports progress and checkpoints through the awaitable context."""
    done = (ctx.last_checkpoint or {}).get("done", 0)
    for i in range(done, n):
        await ctx.raise_if_canceled()
        await ctx.progress(100 * (i + 1) / n, f"step {i + 1}")
        await ctx.checkpoint({"done": i + 1})
    return {"steps": n}


def prepare(dsn: str) -> None:
    from pgjobs import registry

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SIDE_TABLES)
        for spec in registry.registered().values():
            if spec.name.startswith("aio."):
                registry.upsert(conn, spec)


def worker_args(processes: int = 1, concurrency: int = 10, *extra: str) -> list[str]:
    return [
        "--import", __name__, "--queues", QUEUE, "--processes", str(processes),
        "--concurrency", str(concurrency), "--lease", "3", "--grace", "5",
        "--cancel-grace", "0.5", "--poll", "0.5", *extra,
    ]  # fmt: skip
