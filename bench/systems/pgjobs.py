"""pgjobs itself: its own CLI worker, one supervisor forking N processes."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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
        """``finished`` completed rows (no history) and ``queued`` no-op jobs,
        then VACUUM ANALYZE as autovacuum would."""
        seed_finished(dsn, finished, history=False)
        with psycopg.connect(dsn, autocommit=True) as conn:
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


# -- finished jobs already in the tables ----------------------------------------

# A completed no-op job as pgjobs leaves it: run_at/created_at, started_at and
# finished_at a millisecond apart, the worker, lease token and duration kept.
# Row g of n finished at %(now)s - %(span)s * (1 - g / n); its id is %(id0)s + g,
# from a range of the id sequence taken beforehand (the insert trigger that
# draws ids is off while seeding).
_SEED_TIME = "%(now)s::timestamptz - %(span)s::interval * (1 - g::float8 / %(total)s::float8)"
_FINISHED_JOBS = (
    "insert into pgjobs.jobs (id, job_type, queue, priority, payload, state, run_at,"
    "  attempt, max_attempts, timeout_seconds, created_at, started_at, finished_at,"
    "  worker, lease_token, last_duration_ms, created_by)"
    " select %(id0)s::bigint + g, 'bench.noop', 'default', 2, '{}', 'completed',"
    "        t - interval '2 ms', 1, 1, 300, t - interval '2 ms', t - interval '1 ms', t,"
    "        'bench/seed', 1, 0.5, 'bench'"
    f"   from (select g, {_SEED_TIME} as t"
    "           from generate_series(%(first)s::bigint, %(last)s::bigint) g) s"
)
# The history pgjobs keeps of such a job: one event per state change after the
# enqueue (which writes none), the claim's and the completion's.
_FINISHED_EVENTS = (
    "insert into pgjobs.job_events (job_id, job_type, attempt, from_state, to_state,"
    "  worker, duration_ms, at, actor)"
    " select %(id0)s::bigint + g, 'bench.noop', 1, e.from_state, e.to_state, 'bench/seed',"
    f"        e.duration_ms, {_SEED_TIME} - e.before, 'bench'"
    "   from generate_series(%(first)s::bigint, %(last)s::bigint) g"
    "  cross join (values ('queued', 'running', null::float8, interval '1 ms'),"
    "                     ('running', 'completed', 0.5, interval '0')"
    "             ) e(from_state, to_state, duration_ms, before)"
)
EVENTS_PER_FINISHED_JOB = 2
SEED_CHUNK = 500_000  # rows per statement: one transaction each, progress between


def seed_finished(
    dsn: str, count: int, *, history: bool, days: float = 0.0,
    progress: Callable[[int], None] | None = None,
) -> None:
    """``count`` completed jobs (with their history when ``history``), their
    finished_at spread evenly over the last ``days`` and ids in that order, as
    a queue that ran them would have left them. Inserted server-side through
    ``pgjobs.jobs`` / ``pgjobs.job_events`` with triggers off (no checks, no
    wake-ups), so the rows land wherever the schema routes them; jobs and
    history from two sessions at once."""
    span = dt.timedelta(days=days)
    with psycopg.connect(dsn, autocommit=True) as conn:
        _ensure_partitions(conn, span)
        row = conn.execute("select nextval('pgjobs.jobs_id_seq') - 1, now()").fetchone()
        assert row is not None
        conn.execute("select setval('pgjobs.jobs_id_seq', %s)", [row[0] + count + 1])
    params = {"id0": row[0], "now": row[1], "span": span, "total": max(count, 1)}
    statements = [_FINISHED_JOBS, *([_FINISHED_EVENTS] if history else [])]
    with ThreadPoolExecutor(len(statements)) as pool:
        done = [pool.submit(_seed_chunks, dsn, s, count, params, progress if i == 0 else None)
                for i, s in enumerate(statements)]
        for future in done:
            future.result()


def _seed_chunks(dsn: str, statement: str, count: int, params: dict[str, Any],
                 progress: Callable[[int], None] | None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("set session_replication_role = replica")
        for first in range(1, count + 1, SEED_CHUNK):
            last = min(first + SEED_CHUNK - 1, count)
            conn.execute(statement, {**params, "first": first, "last": last})
            if progress:
                progress(last)


def _ensure_partitions(conn: psycopg.Connection[Any], span: dt.timedelta) -> None:
    """When the schema keeps finished jobs in partitions by period and offers
    ``pgjobs.partitions_ensure(now)``, the days the seed covers get theirs
    first (today's alone for no span: rows in the default partition would keep
    the workers from making it), as workers running then would have made them;
    without it the rows go wherever the schema puts them (a default partition,
    a plain table)."""
    found = conn.execute(
        "select to_regprocedure('pgjobs.partitions_ensure(timestamptz)') is not null"
    ).fetchone()
    if not (found and found[0]):
        return
    conn.execute(
        "select pgjobs.partitions_ensure(t) from generate_series(now() - %s, now(),"
        " interval '1 day') t",
        [span],
    )
