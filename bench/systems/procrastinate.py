"""procrastinate: one ``run_worker`` process per worker process (it has no
supervisor of its own), async tasks, LISTEN/NOTIFY on, concurrency 10."""

from __future__ import annotations

from typing import Any

from bench.systems.base import AsyncClient, Client, System

CONCURRENCY = 10


def use_connector(app: Any, connector: Any) -> None:
    """What ``App.replace_connector`` does, without restoring the old one."""
    app.connector = connector
    app.job_manager.connector = connector


class ProcrastinateClient(AsyncClient):
    def __init__(self, dsn: str) -> None:
        super().__init__()
        import procrastinate

        from bench.apps import procrastinate as app_module

        self.app = app_module.app
        use_connector(self.app, procrastinate.PsycopgConnector(conninfo=dsn))
        self.tasks = app_module
        self.run(self.app.open_async())

    def enqueue(self, ping: int | None = None) -> None:
        if ping is None:
            self.run(self.tasks.noop.defer_async())
        else:
            self.run(self.tasks.ping.defer_async(seq=ping))

    def enqueue_batch(self, count: int) -> None:
        self.run(self.tasks.noop.batch_defer_async(*([{}] * count)))

    async def aclose(self) -> None:
        await self.app.connector.close_async()


class Procrastinate(System):
    name = "procrastinate"
    packages = ("procrastinate",)
    version_of = "procrastinate"
    tables = ("public.procrastinate_jobs", "public.procrastinate_events")
    remaining_sql = "select count(*) from procrastinate_jobs where status in ('todo', 'doing')"
    drain_jobs_max = 5_000  # about a hundred jobs/s here: 50,000 would take minutes per drain
    config = (
        f"one `app.run_worker(concurrency={CONCURRENCY}, listen_notify=True)` per process"
        f" (drains of {drain_jobs_max:,} jobs)"
    )

    def install(self, dsn: str) -> None:
        client = ProcrastinateClient(dsn)
        try:
            client.run(client.app.schema_manager.apply_schema_async())
        finally:
            client.close()

    def client(self, dsn: str) -> Client:
        return ProcrastinateClient(dsn)

    def worker_commands(self, dsn: str, processes: int) -> list[list[str]]:
        return [self.app_command(dsn, str(CONCURRENCY)) for _ in range(processes)]
