"""Bulk enqueue as an A/B of checkouts, beside PgQueuer and the raw floor.

``python -m bench.enqueue_ab --variants main=/tmp/main,branch=. --rounds 5``
runs, per round and in this order, each variant's pgjobs (its schema and its
Python package, on a fresh database), PgQueuer and the floor's 100-row INSERT
(pgbench), all with ``make bench``'s own measurement: ``measure.enqueue_rate``
with its client count, ``batch`` jobs per call and ten times ``enqueue_jobs``
jobs (``settings.FULL``), and the floor's ``insert_100`` at the same client
count. It prints one JSON line per figure and a summary of medians and of
each variant's per-round ratios to PgQueuer and to the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Any

from bench import measure, pg, variants
from bench.floor import Floor
from bench.settings import FULL
from bench.systems import ALL

_VARIANT = """
import json, sys
from bench import measure, pg
from bench.systems import ALL
admin, name, jobs, clients, batch = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
system = ALL["pgjobs"]()
with pg.database(admin, name) as dsn:
    system.install(dsn)
    print(json.dumps(measure.enqueue_rate(system, dsn, jobs, clients, batch)))
"""


def variant_rate(path: str, admin: str, label: str, jobs: int, clients: int, batch: int) -> float:
    """The variant's enqueue rate, its own package imported (PYTHONPATH first)."""
    return float(variants.last_line(path, _VARIANT, admin, pg.database_name(f"ab_{label}"),
                                    str(jobs), str(clients), str(batch)))


def peer_rate(admin: str, name: str, jobs: int, clients: int, batch: int) -> float:
    system = ALL[name]()
    with pg.database(admin, pg.database_name(f"ab_{name}")) as dsn:
        system.install(dsn)
        return measure.enqueue_rate(system, dsn, jobs, clients, batch)


def floor_rate(floor: Floor, clients: int, transactions: int, batch: int) -> float:
    with floor.fresh("ab") as dsn:
        floor.seed(dsn, 0, 0)
        return floor.pgbench_rate(dsn, "insert_100.sql", clients, transactions, batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.enqueue_ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", required=True, help="label=checkout,...")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repeats")
    parser.add_argument("--peer", default="pgqueuer")
    parser.add_argument("--jobs", type=int, default=FULL.enqueue_jobs * 10)
    parser.add_argument("--clients", type=int, default=FULL.enqueue_clients)
    parser.add_argument("--batch", type=int, default=FULL.bulk_batch)
    args = parser.parse_args(argv)
    admin = pg.admin_dsn()
    variants = [v.split("=", 1) for v in args.variants.split(",")]
    floor = Floor(admin)
    floor.prepare_template()
    rates: dict[str, list[float]] = {}
    try:
        for r in range(args.rounds):
            row: dict[str, float] = {}
            for label, path in variants:
                row[label] = variant_rate(os.path.abspath(path), admin, label, args.jobs,
                                          args.clients, args.batch)
            row[args.peer] = peer_rate(admin, args.peer, args.jobs, args.clients, args.batch)
            # The floor's own transaction count: enqueue_jobs / batch per client.
            row["floor"] = floor_rate(floor, args.clients, max(1, FULL.floor_transactions // 10),
                                      args.batch)
            for key, value in row.items():
                rates.setdefault(key, []).append(value)
            print(json.dumps({"round": r, **{k: round(v) for k, v in row.items()},
                              **{f"{label}/{args.peer}": round(row[label] / row[args.peer], 3)
                                 for label, _ in variants},
                              **{f"{label}/floor": round(row[label] / row["floor"], 3)
                                 for label, _ in variants}}), flush=True)
    finally:
        floor.drop_template()
    summary: dict[str, Any] = {k: round(statistics.median(v)) for k, v in rates.items()}
    for label, _ in variants:
        for other in (args.peer, "floor"):
            ratios = [a / b for a, b in zip(rates[label], rates[other], strict=True)]
            summary[f"{label}/{other}"] = round(statistics.median(ratios), 3)
    print(json.dumps({"median": summary}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
