"""Oban worker process: ``python -m bench.apps.oban DSN LIMIT``."""

from __future__ import annotations

import asyncio
import signal
import sys

from oban import Oban

import bench.apps.oban_jobs  # noqa: F401  (registers the workers)


async def run(dsn: str, limit: int) -> None:
    pool = await Oban.create_pool(dsn, max_size=10)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Oban(pool=pool, queues={"default": limit}):
        await stop.wait()
    await pool.close()


def main() -> None:
    asyncio.run(run(sys.argv[1], int(sys.argv[2])))


if __name__ == "__main__":
    main()
