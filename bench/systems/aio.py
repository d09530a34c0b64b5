"""The async variants of the benchmarked queues (bench/aio.py): the same
systems, draining async jobs (a no-op coroutine, or one that awaits
``asyncio.sleep(0.01)``) in each one's recommended async configuration."""

from __future__ import annotations

import os
from typing import ClassVar

from bench.systems.base import Client, System
from bench.systems.pgjobs import PgJobs, PgJobsClient
from bench.systems.pgqueuer import PgQueuer, PgQueuerClient
from bench.systems.procrastinate import Procrastinate, ProcrastinateClient

# Coroutines in flight per pgjobs worker process (--concurrency); BENCH_CONCURRENCY
# overrides it (the sleep's ceiling is processes x concurrency / 10 ms).
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "50"))


class _PgJobsTyped(PgJobsClient):
    def __init__(self, dsn: str, job_type: str) -> None:
        super().__init__(dsn)
        self.job_type = job_type

    def enqueue_batch(self, count: int) -> None:
        import pgjobs

        pgjobs.enqueue_many(self.conn, [{"job_type": self.job_type}] * count)


class PgJobsAsync(PgJobs):
    """pgjobs' worker with async handlers, ``--concurrency`` per process."""

    job_type: ClassVar[str] = "bench.anoop"
    concurrency: ClassVar[int] = CONCURRENCY
    config = f"`pgjobs worker --processes N --concurrency {CONCURRENCY}`, async handlers"

    def client(self, dsn: str) -> Client:
        return _PgJobsTyped(dsn, self.job_type)

    def worker_commands(self, dsn: str, processes: int) -> list[list[str]]:
        [command] = super().worker_commands(dsn, processes)
        return [[*command, "--concurrency", str(self.concurrency)]]


class PgJobsSleep(PgJobsAsync):
    job_type = "bench.sleep"


class _PgQueuerSleepClient(PgQueuerClient):
    def enqueue_batch(self, count: int) -> None:
        self.run(self.queries.enqueue(["sleep"] * count, [None] * count, [0] * count))


class PgQueuerSleep(PgQueuer):
    def client(self, dsn: str) -> Client:
        return _PgQueuerSleepClient(dsn)


class _ProcrastinateSleepClient(ProcrastinateClient):
    def enqueue_batch(self, count: int) -> None:
        self.run(self.tasks.sleep.batch_defer_async(*([{}] * count)))


class ProcrastinateSleep(Procrastinate):
    def client(self, dsn: str) -> Client:
        return _ProcrastinateSleepClient(dsn)


IO_BOUND: dict[str, type[System]] = {
    "pgjobs": PgJobsSleep,
    "pgqueuer": PgQueuerSleep,
    "procrastinate": ProcrastinateSleep,
}
