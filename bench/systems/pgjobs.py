"""pgjobs itself: its own CLI worker, one supervisor forking N processes."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg

from bench.systems.base import Client, System

BATCH_SIZE = 100  # the worker's default claim size


class PgJobsClient(Client):
    job_type = "bench.noop"  # what enqueue_batch makes (bench.held: bench.sleep1ms)

    def __init__(self, dsn: str) -> None:
        import bench.apps.pgjobs  # noqa: F401  (registers the job types)

        self.conn = psycopg.connect(dsn, autocommit=True)

    def enqueue(self, ping: int | None = None) -> None:
        import pgjobs

        if ping is None:
            pgjobs.enqueue(self.conn, "bench.noop", {})
        else:
            pgjobs.enqueue(self.conn, "bench.ping", {"seq": ping})

    def enqueue_batch(self, count: int) -> None:
        import pgjobs

        pgjobs.enqueue_many(self.conn, [{"job_type": self.job_type}] * count)

    def close(self) -> None:
        self.conn.close()


class PgJobs(System):
    name = "pgjobs"
    packages = ("pgjobs",)
    version_of = "pgjobs"
    tables = ("pgjobs.jobs", "pgjobs.job_events")
    # Two counts that the partial indexes serve, so the probe reads the
    # unfinished jobs only, not every finished one as well.
    remaining_sql = (
        "select (select count(*) from pgjobs.jobs where state in ('queued', 'retrying'))"
        " + (select count(*) from pgjobs.jobs where state = 'running')"
    )
    config = f"`pgjobs worker --processes N --batch-size {BATCH_SIZE}` (LISTEN on)"

    def install(self, dsn: str) -> None:
        from pgjobs import log
        from pgjobs.migrate import migrate

        log.configure("warning")
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn)
        # Types registered once here, so no measurement pays for the upsert.
        with PgJobsClient(dsn).conn as conn:
            from pgjobs import registry

            registry.sync(conn)

    def client(self, dsn: str) -> Client:
        return PgJobsClient(dsn)

    def worker_commands(self, dsn: str, processes: int) -> list[list[str]]:
        exe = Path(sys.executable).with_name("pgjobs")
        return [
            [
                str(exe), "worker", "--dsn", dsn, "--processes", str(processes),
                "--queues", "default", "--import", "bench.apps.pgjobs",
                "--batch-size", str(BATCH_SIZE), "--log-level", "warning",
            ]
        ]

    # -- claim latency on a big table (also done by the floor) --------------

    def seed(self, dsn: str, finished: int, queued: int) -> None:
        """``finished`` completed rows (triggers off: no history, no checks, and
        the id drawn here rather than by the insert trigger) and
        ``queued`` no-op jobs, then VACUUM ANALYZE as autovacuum would."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("set session_replication_role = replica")
            conn.execute(
                "insert into pgjobs.jobs (id, job_type, queue, priority, payload, state,"
                "  attempt, max_attempts, timeout_seconds, started_at, finished_at, result,"
                "  lease_token)"  # a finished job holds one (jobs_finished_token_check)
                " select nextval('pgjobs.jobs_id_seq'), 'bench.noop', 'default', 2, '{}',"
                "        'completed', 1, 1, 300,"
                "        now(), now(), 'null', 0 from generate_series(1, %s)",
                [finished],
            )
            conn.execute("reset session_replication_role")
            conn.execute(
                "insert into pgjobs.jobs (job_type) select 'bench.noop'"
                "  from generate_series(1, %s)",
                [queued],
            )
            conn.execute("vacuum analyze pgjobs.jobs")

    def claim_statement(self, batch: int) -> str:
        return (
            "select id from pgjobs.claim('bench', array['default'], "
            f"{int(batch)}, 30)"
        )
