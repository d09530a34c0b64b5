"""Handlers the pgjobs worker imports (``--import bench.apps.pgjobs``)."""

from __future__ import annotations

from typing import Any

import pgjobs
from bench.apps import ping as _ping


@pgjobs.job("bench.noop", max_attempts=1)
def noop(ctx: pgjobs.JobContext, **payload: Any) -> None:
    return None


@pgjobs.job("bench.ping", max_attempts=1)
def ping(ctx: pgjobs.JobContext, seq: int) -> None:
    _ping.report(seq)
