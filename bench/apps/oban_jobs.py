"""Oban workers; their names (module.function) are what enqueued jobs carry, so
they live here rather than in the ``__main__`` of bench.apps.oban."""

from __future__ import annotations

from oban import job

from bench.apps import ping as _ping


@job(queue="default", max_attempts=1)
async def noop() -> None:
    return None


@job(queue="default", max_attempts=1)
async def ping(seq: int) -> None:
    _ping.report(seq)
