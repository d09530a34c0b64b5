"""``pgjobs demo``: a fresh database, 1,000 jobs of three types, a worker, the counts.

Some jobs fail once and succeed on retry, some fail every attempt and some
raise PermanentError: both of those end in the dead-letter queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg

import pgjobs
from pgjobs import db, jobs
from pgjobs import migrate as migrate_mod
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.supervisor import run as run_worker

DEMO_DATABASE = "pgjobs_demo"


@pgjobs.job("demo.thumbnail", queue="demo", timeout=30)
def thumbnail(ctx: pgjobs.JobContext, image: int) -> dict[str, Any]:
    return {"thumbnail": f"img-{image}-small.png"}


@pgjobs.job("demo.report", queue="demo", max_attempts=3, retry_base=0.05, retry_cap=0.2)
def report(ctx: pgjobs.JobContext, n: int) -> dict[str, Any]:
    ctx.progress(50, "half way")
    if ctx.attempt == 1 and n % 2 == 0:
        raise pgjobs.TransientError("the report service was busy")  # retried, then completes
    return {"pages": n % 7 + 1}


@pgjobs.job("demo.invoice", queue="demo", max_attempts=2, retry_base=0.05, retry_cap=0.2)
def invoice(ctx: pgjobs.JobContext, n: int) -> None:
    if n % 2 == 0:
        raise pgjobs.PermanentError("invoice has no customer")  # dead at once
    raise ConnectionError("payment gateway unreachable")  # dead after 2 attempts


def run(
    server_dsn: str, echo: Callable[[Any], None], *, count: int = 1000, processes: int = 2
) -> int:
    dsn = db.with_dbname(server_dsn, DEMO_DATABASE)
    db.drop_database(server_dsn, DEMO_DATABASE)
    db.create_database(server_dsn, DEMO_DATABASE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate_mod.migrate(conn)
    reports, invoices = count // 5, count // 10
    batch: list[dict[str, Any]] = (
        [
            {"job_type": "demo.thumbnail", "payload": {"image": i}, "organization": "acme"}
            for i in range(count - reports - invoices)
        ]
        + [
            {"job_type": "demo.report", "payload": {"n": i}, "organization": "globex"}
            for i in range(reports)
        ]
        + [
            {"job_type": "demo.invoice", "payload": {"n": i}, "organization": "initech"}
            for i in range(invoices)
        ]
    )
    with psycopg.connect(dsn) as conn:
        pgjobs.enqueue_many(conn, batch)
    echo(f"database {DEMO_DATABASE}: {where(server_dsn)}")
    echo(f"enqueued {len(batch)} jobs; running a {processes}-process worker until done")
    started = time.monotonic()
    cfg = WorkerConfig(
        dsn=dsn, queues=("demo",), processes=processes, exit_when_idle=True, poll_seconds=0.5
    )
    code = run_worker(cfg, log_level="warning")
    elapsed = time.monotonic() - started
    with psycopg.connect(dsn) as conn:
        counts = jobs.state_counts(conn)
        by_type = jobs.type_state_counts(conn)
    echo(f"done in {elapsed:.1f}s")
    echo("jobs per state:")
    for state in pgjobs.State:
        echo(f"  {state.value:<10} {counts.get(state.value, 0):>6}")
    echo("jobs per type and state:")
    for job_type, state_name, n in by_type:
        echo(f"  {job_type:<16} {state_name:<10} {n:>6}")
    echo(f'look inside: psql "$(pgjobs server url --database {DEMO_DATABASE})"')
    return code


def where(server_dsn: str) -> str:
    """The demo database's server in words: the embedded one or the DSN's host."""
    from pgjobs import diagnose

    if db.is_embedded(server_dsn):
        return f"on the embedded server ({db.embedded_pgdata()})"
    return f"on {diagnose.describe(server_dsn).rsplit('/', 1)[0]}"
