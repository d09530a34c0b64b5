"""PgQueuer worker process: ``python -m bench.apps.pgqueuer DSN BATCH``."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta

import asyncpg
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager

from bench.apps import ping as _ping


def register(qm: QueueManager) -> None:
    @qm.entrypoint("noop")
    async def noop(job: Job) -> None:
        return None

    @qm.entrypoint("sleep")
    async def sleep(job: Job) -> None:
        await asyncio.sleep(_ping.SLEEP_SECONDS)

    @qm.entrypoint("ping")
    async def ping(job: Job) -> None:
        _ping.report(int(job.payload or b"0"))


async def run(dsn: str, batch: int) -> None:
    conn = await asyncpg.connect(dsn)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    register(qm)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, qm.shutdown.set)
    await qm.run(batch_size=batch, dequeue_timeout=timedelta(seconds=5))
    await conn.close()


def main() -> None:
    asyncio.run(run(sys.argv[1], int(sys.argv[2])))


if __name__ == "__main__":
    main()
