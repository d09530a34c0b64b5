"""Handlers the pgjobs worker imports (``--import bench.apps.pgjobs``)."""

from __future__ import annotations

import time
from typing import Any

import pgjobs
from bench.apps import ping as _ping


@pgjobs.job("bench.noop", max_attempts=1)
def noop(ctx: pgjobs.JobContext, **payload: Any) -> None:
    return None


@pgjobs.job("bench.ping", max_attempts=1)
def ping(ctx: pgjobs.JobContext, seq: int) -> None:
    _ping.report(seq)


@pgjobs.job("bench.sleep1ms", max_attempts=1)
def sleep1ms(ctx: pgjobs.JobContext, **payload: Any) -> None:
    time.sleep(0.001)  # bench.held: the independent harness's 1 ms job
