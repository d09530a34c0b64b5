"""Wake-up latency as an A/B of checkouts: ``make bench``'s idle figure
(``measure.latency``: from just before the enqueue call, its commit included,
to the ping handler's start, one job at a time on an idle 1-process worker)
and, with ``--pickup``, the pickup figure (``bench.pickup``: 100 jobs/s to 32
processes).

``python -m bench.wakeup_ab --variants before=/tmp/before,after=. --rounds 5``
runs, per round and in turn, each variant on a fresh database with its own
schema, its own package in the client and its own workers; one JSON line per
run (p50/p95/p99 in ms), then the medians and each variant's per-round ratio
to the first. ``BENCH_DSN`` picks the server.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Any

from bench import pg, variants

_VARIANT = """
import json, os, sys
from bench import measure, pg, pickup
from bench.systems import ALL
admin, name, figure, samples, processes = sys.argv[1:6]
os.environ["BENCH_WORKER_PATH"] = os.getcwd()
system = ALL["pgjobs"]()
with pg.database(admin, name) as dsn:
    system.install(dsn)
    if figure == "idle":
        times = measure.latency(system, dsn, int(samples))
        out = {f"p{p}_ms": measure.percentile(times, p) for p in (50, 95, 99)}
    else:
        out = pickup.pickup(system, dsn, int(processes), pickup.RATE, int(samples))
print(json.dumps(out))
"""


def variant_run(
    path: str, admin: str, label: str, figure: str, samples: int, processes: int
) -> dict[str, float]:
    """One run of ``figure`` with the variant's package and schema (its
    checkout first on PYTHONPATH, its workers run from there)."""
    result: dict[str, float] = json.loads(variants.last_line(
        path, _VARIANT, admin, pg.database_name(f"wk_{label}"), figure, str(samples),
        str(processes)))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wakeup_ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", required=True, help="label=checkout,...")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repeats")
    parser.add_argument("--samples", type=int, default=200,
                        help="pings per run (make bench: 200 idle, 1000 pickup)")
    parser.add_argument("--pickup", action="store_true",
                        help="the pickup figure (bench.pickup) instead of the idle one")
    parser.add_argument("--processes", type=int, default=32, help="pickup's processes")
    args = parser.parse_args(argv)
    admin = pg.admin_dsn()
    figure = "pickup" if args.pickup else "idle"
    variants = [v.split("=", 1) for v in args.variants.split(",")]
    runs: dict[str, list[dict[str, float]]] = {}
    for r in range(args.rounds):
        # Alternate which variant goes first, so neither always follows the other.
        order = variants if r % 2 == 0 else variants[::-1]
        for label, path in order:
            out = variant_run(os.path.abspath(path), admin, label, figure, args.samples,
                              args.processes)
            runs.setdefault(label, []).append(out)
            print(json.dumps({"round": r, "variant": label, "figure": figure,
                              **{k: round(v, 3) for k, v in out.items()}}), flush=True)
    first = variants[0][0]
    summary: dict[str, Any] = {}
    for label, _ in variants:
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            values = [run[key] for run in runs[label]]
            summary[f"{label} {key}"] = round(statistics.median(values), 3)
            if label != first:
                ratios = [a[key] / b[key] for a, b in zip(runs[label], runs[first], strict=True)]
                summary[f"{label}/{first} {key}"] = round(statistics.median(ratios), 3)
    print(json.dumps({"median": summary}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
