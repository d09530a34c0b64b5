"""RQ on the machine's Redis: N SimpleWorker processes. Postgres plays no part;
each fresh "database" is an emptied Redis database (BENCH_REDIS_URL, default
db 13 of 127.0.0.1:6379: do not point it at data you keep)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from bench.systems.base import Client, System

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


class RQClient(Client):
    def __init__(self, url: str) -> None:
        from redis import Redis
        from rq import Queue

        self.redis = Redis.from_url(url)
        self.queue = Queue("default", connection=self.redis)

    def enqueue(self, ping: int | None = None) -> None:
        if ping is None:
            self.queue.enqueue("bench.apps.rq.noop")
        else:
            self.queue.enqueue("bench.apps.rq.ping", ping)

    def enqueue_batch(self, count: int) -> None:
        from rq import Queue

        data = [Queue.prepare_data("bench.apps.rq.noop") for _ in range(count)]
        with self.redis.pipeline() as pipe:
            self.queue.enqueue_many(data, pipeline=pipe)
            pipe.execute()

    def close(self) -> None:
        self.redis.close()


class RQ(System):
    name = "rq"
    packages = ("rq", "redis")
    version_of = "rq"
    uses_postgres = False
    drain_jobs_max = 5_000  # a few hundred jobs/s: 50,000 would take minutes per drain
    config = f"N `rq.SimpleWorker` processes on Redis (drains of {drain_jobs_max:,} jobs)"

    def prepare_template(self, admin: str, run: int) -> None:
        self.admin = admin

    def drop_template(self) -> None:
        pass

    @contextlib.contextmanager
    def fresh(self, label: str) -> Iterator[str]:
        from redis import Redis

        redis = Redis.from_url(REDIS_URL)
        redis.flushdb()
        try:
            yield REDIS_URL
        finally:
            redis.flushdb()
            redis.close()

    def install(self, dsn: str) -> None:
        pass

    def client(self, dsn: str) -> Client:
        return RQClient(dsn)

    def worker_commands(self, dsn: str, processes: int) -> list[list[str]]:
        return [self.app_command(dsn) for _ in range(processes)]

    @contextlib.contextmanager
    def probe(self, dsn: str) -> Iterator[Callable[[], int]]:
        from redis import Redis
        from rq import Queue

        with Redis.from_url(dsn) as redis:
            queue = Queue("default", connection=redis)
            yield lambda: queue.count + queue.started_job_registry.count
