"""CPU per job of bulk enqueue, as an A/B of checkouts beside PgQueuer and the
raw 100-row INSERT: a figure that holds on a machine other runs load, where
wall-clock rates swing from round to round.

``python -m bench.enqueue_cpu --variants main=/tmp/main,branch=. --rounds 5``
runs, per round, each variant's pgjobs (its schema and package, a fresh
database), PgQueuer and the floor's INSERT (through psycopg), ``--calls``
calls of ``--batch`` no-op jobs each on one connection, and reads the
backend's CPU time from ``/proc`` (so the server must run on this machine)
and the client's own around them. Prints one JSON line per round and the
medians of server, client and total microseconds per job.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg

from bench import pg, variants
from bench.systems import ALL

FLOOR_TABLE = (
    "create table jobs (id bigint generated always as identity primary key,"
    " queue text not null default 'default', priority smallint not null default 2,"
    " run_at timestamptz not null default now(), state text not null default 'queued',"
    " payload jsonb not null default '{}');"
    " create index jobs_runnable_idx on jobs (priority, run_at, id) where state = 'queued'"
)


def backend_cpu(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(call: Callable[[], Any], pid: int, calls: int, batch: int) -> dict[str, float]:
    for _ in range(min(50, calls)):
        call()
    b0, c0 = backend_cpu(pid), time.process_time()
    for _ in range(calls):
        call()
    b1, c1 = backend_cpu(pid), time.process_time()
    jobs = calls * batch
    server, client = (b1 - b0) / jobs * 1e6, (c1 - c0) / jobs * 1e6
    return {"server_us": server, "client_us": client, "total_us": server + client}


def pgjobs_cpu(dsn: str, calls: int, batch: int,
               organization: str | None = None) -> dict[str, float]:
    """Jobs of ``organization``, or system jobs (the default, as ``make bench``'s)."""
    import bench.apps.pgjobs  # noqa: F401  (registers the job types)
    import pgjobs

    ALL["pgjobs"]().install(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        job = {"job_type": "bench.noop"}
        if organization is not None:
            job["organization"] = organization
        jobs = [job] * batch
        return measure(lambda: pgjobs.enqueue_many(conn, jobs), conn.info.backend_pid,
                       calls, batch)


def pgqueuer_cpu(dsn: str, calls: int, batch: int) -> dict[str, float]:
    system = ALL["pgqueuer"]()
    system.install(dsn)
    client: Any = system.client(dsn)
    try:
        pid = client.run(client.conn.fetchval("select pg_backend_pid()"))
        return measure(lambda: client.enqueue_batch(batch), pid, calls, batch)
    finally:
        client.close()


def floor_cpu(dsn: str, calls: int, batch: int) -> dict[str, float]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(FLOOR_TABLE)
        return measure(
            lambda: conn.execute("insert into jobs (payload) select '{}' from"
                                 " generate_series(1, %s)", [batch], prepare=True),
            conn.info.backend_pid, calls, batch)


# This file, loaded by path: the variant's own bench package may not have it.
_VARIANT = """
import importlib.util, json, sys
from bench import pg
spec = importlib.util.spec_from_file_location("enqueue_cpu", sys.argv[5])
enqueue_cpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(enqueue_cpu)
admin, name, calls, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
organization = sys.argv[6] or None
with pg.database(admin, name) as dsn:
    print(json.dumps(enqueue_cpu.pgjobs_cpu(dsn, calls, batch, organization)))
"""


def variant_cpu(path: str, admin: str, label: str, calls: int, batch: int,
                organization: str | None = None) -> dict[str, float]:
    figures: dict[str, float] = json.loads(variants.last_line(
        path, _VARIANT, admin, pg.database_name(f"cpu_{label}"), str(calls), str(batch),
        os.path.abspath(__file__), organization or ""))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.enqueue_cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", required=True, help="label=checkout,...")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--organization", default=None,
                        help="pgjobs enqueues jobs of this organization (default: system jobs)")
    args = parser.parse_args(argv)
    admin = pg.admin_dsn()
    variants = [v.split("=", 1) for v in args.variants.split(",")]
    found: dict[str, list[dict[str, float]]] = {}
    for r in range(args.rounds):
        row = {label: variant_cpu(os.path.abspath(path), admin, label, args.calls, args.batch,
                                  args.organization)
               for label, path in variants}
        for name, run in (("pgqueuer", pgqueuer_cpu), ("floor", floor_cpu)):
            with pg.database(admin, pg.database_name(f"cpu_{name}")) as dsn:
                row[name] = run(dsn, args.calls, args.batch)
        for key, value in row.items():
            found.setdefault(key, []).append(value)
        print(json.dumps({"round": r, **{k: {f: round(x, 2) for f, x in v.items()}
                                         for k, v in row.items()}}), flush=True)
    print(json.dumps({"median": {k: {f: round(statistics.median(x[f] for x in v), 2)
                                      for f in v[0]} for k, v in found.items()}}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
