"""Wake-up latency behind PgBouncer against direct connections.

    python -m bench.pooler [--samples 60] [--dsn ADMIN_DSN]

Enqueue-to-start latency (p50/p99, milliseconds) on an idle 1-process worker,
measured as ``make bench`` measures it (bench/measure.py), twice on one fresh
database: once connected to PostgreSQL directly (the worker LISTENs, NOTIFY
wakes it) and once through a PgBouncer in transaction mode (bench/pgbouncer.py;
the worker detects it and polls every second). The client enqueues with
psycopg's defaults in both cases. Needs the ``pgbouncer`` binary.
"""

from __future__ import annotations

import argparse
import secrets

import psycopg

from bench import pgbouncer
from bench.measure import latency, percentile
from bench.systems.pgjobs import PgJobs
from pgjobs import db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--dsn", default=None, help="admin DSN (default: the test server)")
    args = parser.parse_args()
    admin = args.dsn or db.test_server_dsn()
    name = f"pgjobs_bench_pooler_{secrets.token_hex(3)}"
    db.create_database(admin, name)
    try:
        dsn = db.with_dbname(admin, name)
        system = PgJobs()
        system.install(dsn)
        rows: list[tuple[str, dict[int, float]]] = []
        with pgbouncer.running(admin, pool_size=5) as bouncer:
            for label, target in (("direct", dsn), ("pgbouncer", bouncer.dsn_for(dsn))):
                found = latency(system, target, args.samples)
                rows.append((label, {p: percentile(found, p) for p in (50, 95, 99)}))
                _clear(dsn)
    finally:
        db.drop_database(admin, name)
    print("| connection | samples | p50 ms | p95 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for label, figures in rows:
        print(
            f"| {label} | {args.samples} | {figures[50]:.1f} | {figures[95]:.1f} |"
            f" {figures[99]:.1f} |"
        )


def _clear(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("delete from pgjobs.job_events")
        conn.execute("delete from pgjobs.jobs")


if __name__ == "__main__":
    main()
