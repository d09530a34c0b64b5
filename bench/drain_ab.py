"""The drain of ``make bench`` as an A/B of checkouts, with CPU per job.

``python -m bench.drain_ab --variants main=/tmp/main,branch=. --rounds 5``
runs, per round and alternating, each variant's drain: its schema and its
Python package on a fresh database, ``jobs`` no-op jobs enqueued, then
``pgjobs worker --processes N`` (``measure.drain``'s workers) until none is
left. Per variant and round it prints the steady rate (jobs/s from the first
finished job on, as ``make bench``'s ``drain_N_steady``) and, over the same
window, the CPU per job of the worker's processes (supervisor and children)
and of the database's server sessions, in microseconds. The summary gives
the medians and, for each variant after the first, the median of its
per-round ratios to the first (rate and both CPU figures).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from bench import measure, pg, variants

# The checkout's own bench package comes first (it may have no drain_ab):
# this module is loaded from its file.
_VARIANT = """
import importlib.util, json, sys
from bench import pg
from bench.systems import ALL
here, admin, name, jobs, processes = *sys.argv[1:4], *map(int, sys.argv[4:6])
spec = importlib.util.spec_from_file_location("drain_ab", here)
drain_ab = importlib.util.module_from_spec(spec)
spec.loader.exec_module(drain_ab)
system = ALL["pgjobs"]()
with pg.database(admin, name) as dsn:
    system.install(dsn)
    print(json.dumps(drain_ab.drain(system, dsn, jobs, processes)))
"""


def drain(system: Any, dsn: str, jobs: int, processes: int,
          timeout: float = 600.0) -> dict[str, float]:
    """``jobs`` no-op jobs run to the end: the rate and CPU per job from the
    first poll that saw one finished (start-up left out) to the last."""
    from bench.held import cpu_seconds  # psutil: only where a drain runs

    measure.fill(system, dsn, jobs)
    with system.probe(dsn) as remaining, measure.workers(system, dsn, processes) as w:
        started = time.monotonic()
        first: tuple[float, int, tuple[float, float]] | None = None
        while True:
            left = remaining()
            if first is None and left < jobs:
                first = (time.monotonic(), left, cpu_seconds(w, dsn))
            if left == 0:
                break
            w.check()
            if time.monotonic() - started > timeout:
                raise measure.BenchError(f"{left} jobs left after {timeout:.0f}s")
            time.sleep(measure.POLL_SECONDS)
        end, cpu = time.monotonic(), cpu_seconds(w, dsn)
    assert first is not None
    t0, done, cpu0 = first
    return {
        "rate": done / (end - t0),
        "worker_us": (cpu[0] - cpu0[0]) / done * 1e6,
        "server_us": (cpu[1] - cpu0[1]) / done * 1e6,
    }


def variant_drain(path: str, admin: str, label: str, jobs: int, processes: int) -> dict[str, float]:
    """One drain with the variant's package and schema (PYTHONPATH first, its workers too)."""
    os.environ["BENCH_WORKER_PATH"] = path
    out = variants.last_line(path, _VARIANT, __file__, admin, pg.database_name(f"drain_{label}"),
                             str(jobs), str(processes))
    return {k: float(v) for k, v in json.loads(out).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drain_ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", required=True, help="label=checkout,...")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repeats")
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args(argv)
    admin = pg.admin_dsn()
    pairs = [v.split("=", 1) for v in args.variants.split(",")]
    figures: dict[str, dict[str, list[float]]] = {label: {} for label, _ in pairs}
    base = pairs[0][0]
    for r in range(args.rounds):
        # Alternating order, so neither variant always runs on the warmer machine.
        order = pairs if r % 2 == 0 else pairs[::-1]
        row = {label: variant_drain(os.path.abspath(path), admin, label, args.jobs,
                                    args.processes) for label, path in order}
        for label, values in row.items():
            for key, value in values.items():
                figures[label].setdefault(key, []).append(value)
        ratios = {f"{label}/{base}:{key}": round(values[key] / row[base][key], 3)
                  for label, values in row.items() if label != base for key in values}
        print(json.dumps({"round": r, **{f"{label}:{k}": round(v, 1) for label, values in
                                         row.items() for k, v in values.items()}, **ratios}),
              flush=True)
    summary: dict[str, Any] = {f"{label}:{key}": round(statistics.median(values), 1)
                               for label, keys in figures.items() for key, values in keys.items()}
    for label, keys in figures.items():
        if label == base:
            continue
        for key, values in keys.items():
            ratios = [a / b for a, b in zip(values, figures[base][key], strict=True)]
            summary[f"{label}/{base}:{key}"] = round(statistics.median(ratios), 3)
    print(json.dumps({"median": summary}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
