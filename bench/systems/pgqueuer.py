"""PgQueuer: one ``QueueManager.run`` process per worker process over asyncpg
(its recommended driver), batch size 100 as its throughput docs suggest."""

from __future__ import annotations

from bench import pg
from bench.systems.base import AsyncClient, Client, System

BATCH_SIZE = 100


class PgQueuerClient(AsyncClient):
    def __init__(self, dsn: str) -> None:
        super().__init__()
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries

        self.conn = self.run(asyncpg.connect(pg.uri(dsn)))
        self.queries = Queries(AsyncpgDriver(self.conn))

    def enqueue(self, ping: int | None = None) -> None:
        if ping is None:
            self.run(self.queries.enqueue("noop", None))
        else:
            self.run(self.queries.enqueue("ping", str(ping).encode()))

    def enqueue_batch(self, count: int) -> None:
        self.run(self.queries.enqueue(["noop"] * count, [None] * count, [0] * count))

    async def aclose(self) -> None:
        await self.conn.close()


class PgQueuer(System):
    name = "pgqueuer"
    packages = ("pgqueuer", "asyncpg")
    version_of = "pgqueuer"
    tables = ("public.pgqueuer", "public.pgqueuer_log")
    # Done jobs are deleted (moved to the log), so every row left is unfinished.
    remaining_sql = "select count(*) from pgqueuer"
    config = f"one `QueueManager.run(batch_size={BATCH_SIZE})` per process, asyncpg"

    def install(self, dsn: str) -> None:
        client = PgQueuerClient(dsn)
        try:
            client.run(client.queries.install())
        finally:
            client.close()

    def client(self, dsn: str) -> Client:
        return PgQueuerClient(dsn)

    def worker_commands(self, dsn: str, processes: int) -> list[list[str]]:
        return [self.app_command(pg.uri(dsn), str(BATCH_SIZE)) for _ in range(processes)]
