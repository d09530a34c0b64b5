"""Oban (the Python port): one ``Oban(queues={"default": 100})`` process per
worker process, the limit its docs give for a busy queue."""

from __future__ import annotations

from bench.systems.base import AsyncClient, Client, System

LIMIT = 100


class ObanClient(AsyncClient):
    def __init__(self, dsn: str) -> None:
        super().__init__()
        from oban import Oban

        from bench.apps import oban_jobs

        self.jobs = oban_jobs
        self.pool = self.run(Oban.create_pool(dsn, max_size=2))
        self.oban = Oban(pool=self.pool, name=f"bench-client-{id(self)}")  # client mode

    def enqueue(self, ping: int | None = None) -> None:
        job = self.jobs.noop.new() if ping is None else self.jobs.ping.new(seq=ping)
        self.run(self.oban.enqueue(job))

    def enqueue_batch(self, count: int) -> None:
        self.run(self.oban.enqueue_many([self.jobs.noop.new() for _ in range(count)]))

    async def aclose(self) -> None:
        await self.pool.close()


class Oban(System):
    name = "oban"
    packages = ("oban",)
    version_of = "oban"
    tables = ("public.oban_jobs",)
    remaining_sql = (
        "select count(*) from oban_jobs where state in ('available', 'executing', 'scheduled')"
    )
    config = f"one `Oban(queues={{'default': {LIMIT}}})` per process"

    def install(self, dsn: str) -> None:
        from oban.schema import install

        client = ObanClient(dsn)
        try:
            client.run(install(client.pool))
        finally:
            client.close()

    def client(self, dsn: str) -> Client:
        return ObanClient(dsn)

    def worker_commands(self, dsn: str, processes: int) -> list[list[str]]:
        return [self.app_command(dsn, str(LIMIT)) for _ in range(processes)]
