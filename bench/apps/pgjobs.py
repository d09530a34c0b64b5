"""Handlers the pgjobs worker imports (``--import bench.apps.pgjobs``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pgjobs
from bench.apps import ping as _ping
from bench.apps.ping import SLEEP_SECONDS


@pgjobs.job("bench.noop", max_attempts=1)
def noop(ctx: pgjobs.JobContext, **payload: Any) -> None:
    return None


@pgjobs.job("bench.ping", max_attempts=1)
def ping(ctx: pgjobs.JobContext, seq: int) -> None:
    _ping.report(seq)


@pgjobs.job("bench.sleep1ms", max_attempts=1)
def sleep1ms(ctx: pgjobs.JobContext, **payload: Any) -> None:
    time.sleep(0.001)  # bench.held: the independent harness's 1 ms job


# The async figures (bench/aio.py): the same no-op as a coroutine, and an
# I/O-bound job that only waits 10 ms.
@pgjobs.job("bench.anoop", max_attempts=1)
async def anoop(ctx: pgjobs.AsyncJobContext, **payload: Any) -> None:
    return None


@pgjobs.job("bench.sleep", max_attempts=1)
async def sleep(ctx: pgjobs.AsyncJobContext, **payload: Any) -> None:
    await asyncio.sleep(SLEEP_SECONDS)
