"""The pressure phases of the sustained run (bench/pressure.py) as an A/B of
checkouts: each variant's schema and workers, in turn, on a fresh database.

``python -m bench.horizon --variants main=/tmp/main,branch=. --rate 800
--rounds 3`` prints one JSON line per run and phase: completed/s / offered
(median over the phase's windows), and per completed job the index entries
read and the buffers touched, with the CPU (cores) of the pressure's sessions,
of every session of the database and of the machine.

``--prefill N`` starts each run with N finished jobs and their history in
today's partitions (bench.systems.pgjobs.seed_finished, never vacuumed): the
table the repeatable_read_counts phase of a long ``make bench`` meets,
without the hour of load that made it. They are seeded once per schema (a
template database per distinct sql/ of the variants) and each run gets a
file copy of it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench import measure, pg, variants
from bench.systems import ALL
from bench.systems.pgjobs import seed_finished
from pgjobs import db

PHASES = ("steady", "idle_in_transaction", "recovery", "repeatable_read_counts")


def schema_key(path: str) -> str:
    """The same for two checkouts that install the same schema (sql/schema
    and sql/migrations; sql/queries is the package's, not the database's)."""
    digest = hashlib.sha256()
    for f in sorted([*Path(path, "sql/schema").glob("*.sql"),
                     *Path(path, "sql/migrations").glob("*.sql")]):
        digest.update(f.relative_to(path).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:12]


def clone(admin: str, name: str, template: str) -> str:
    """A file copy of ``template`` (the WAL_LOG strategy writes gigabytes of WAL)."""
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("checkpoint")
        conn.execute(sql.SQL("create database {} template {} strategy file_copy").format(
            sql.Identifier(name), sql.Identifier(template)))
    return db.with_dbname(admin, name)


def phases(series: list[dict[str, Any]], rate: float) -> dict[str, dict[str, float]]:
    out = {}
    for ph in PHASES:
        points = [p for p in series if p.get("phase") == ph]
        if not points:
            continue
        out[ph] = {
            "share": statistics.median(p["completed_per_s"] for p in points) / rate,
            **{key: statistics.fmean(p.get(key, 0.0) for p in points)
               for key in ("index_entries_per_job", "buffers_per_job", "cpu_pressure_cores",
                           "cpu_server_cores", "cpu_machine_cores", "dead")},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.horizon", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", required=True, help="label=checkout,...")
    parser.add_argument("--rate", type=float, default=800.0, help="jobs/s offered")
    parser.add_argument("--lead", type=float, default=10.0, help="seconds of load alone")
    parser.add_argument("--seconds", type=float, default=60.0, help="per pressure phase")
    parser.add_argument("--recovery", type=float, default=15.0)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats")
    parser.add_argument("--prefill", type=int, default=0,
                        help="finished jobs in today's partition before the run")
    args = parser.parse_args(argv)
    admin = pg.admin_dsn()
    system = ALL["pgjobs"]()
    schedule = [("idle_in_transaction", args.seconds), ("recovery", args.recovery),
                ("repeatable_read_counts", args.seconds)]
    pairs = [(label, os.path.abspath(path))
             for label, path in (v.split("=", 1) for v in args.variants.split(","))]
    templates: dict[str, str] = {}
    with contextlib.ExitStack() as made:
        for _label, path in pairs if args.prefill else ():
            key = schema_key(path)
            if key not in templates:
                templates[key] = name = pg.database_name(f"horizon_seed_{key}")
                made.callback(pg.drop, admin, name)
                dsn = pg.create(admin, name)
                variants.install(path, dsn)
                seed_finished(dsn, args.prefill, history=True)
        for r in range(args.rounds):
            for label, path in pairs:
                os.environ["BENCH_WORKER_PATH"] = path
                name = pg.database_name(f"horizon_{label}")
                pg.drop(admin, name)
                try:
                    if args.prefill:
                        dsn = clone(admin, name, templates[schema_key(path)])
                    else:
                        dsn = pg.create(admin, name)
                        variants.install(path, dsn)
                    series = measure.sustained(system, dsn, args.rate, args.lead, args.window,
                                               phases=schedule)
                finally:
                    pg.drop(admin, name)
                for ph, figures in phases(series, args.rate).items():
                    print(json.dumps({"round": r, "variant": label, "rate": args.rate,
                                      "phase": ph,
                                      **{k: round(v, 3) for k, v in figures.items()}}),
                          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
