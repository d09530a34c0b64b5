"""The async figures, side by side in one run:

- the async no-op drain against the sync no-op drain (pgjobs, 2 processes);
- the I/O-bound drain (each job awaits ``asyncio.sleep(0.01)``) at 2
  processes: pgjobs (``--concurrency``), PgQueuer and procrastinate, with the
  ceiling the sleep itself sets for pgjobs' concurrency;
- ``await pgjobs.aio.enqueue`` one job per transaction against the sync rate.

``python -m bench.aio [--quick] [--runs N] [--systems pgjobs,pgqueuer,procrastinate]``
writes bench/results/<date>-async.md; ``make bench`` runs it after the main
session (bench/__main__.py).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import measure, pg, settings
from bench.apps.ping import SLEEP_SECONDS
from bench.settings import Sizes
from bench.systems.aio import CONCURRENCY, IO_BOUND, PgJobsAsync
from bench.systems.base import System
from bench.systems.pgjobs import PgJobs

PROCESSES = 2
RESULTS = Path(__file__).resolve().parent / "results"


def _drain(system: System, admin: str, jobs: int, sizes: Sizes, run: int) -> float:
    system.prepare_template(admin, run)
    try:
        with system.fresh("adrain") as dsn:
            return measure.drain(system, dsn, jobs, PROCESSES, sizes.worker_timeout)["steady"]
    finally:
        system.drop_template()


def _enqueue_client(dsn: str, count: int, face: str, barrier: Any, out: Any) -> None:
    import pgjobs
    from bench.apps import pgjobs as _handlers  # noqa: F401 - registers bench.noop

    if face == "sync":
        with psycopg.connect(dsn, autocommit=True) as conn:
            barrier.wait()
            start = time.time()
            for _ in range(count):
                pgjobs.enqueue(conn, "bench.noop", {})
            out.put((start, time.time()))
        return

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            barrier.wait()
            start = time.time()
            for _ in range(count):
                await pgjobs.aio.enqueue(aconn, "bench.noop", {})
            out.put((start, time.time()))

    asyncio.run(run())


def _enqueue_rate(admin: str, face: str, sizes: Sizes, run: int) -> float:
    """Jobs/s, ``enqueue_clients`` processes, one job per transaction."""
    system = PgJobs()
    system.prepare_template(admin, run)
    try:
        with system.fresh(f"aenq_{face}") as dsn:
            ctx = multiprocessing.get_context("fork")
            clients = sizes.enqueue_clients
            barrier, out = ctx.Barrier(clients), ctx.Queue()
            share = sizes.enqueue_jobs // clients
            procs = [
                ctx.Process(target=_enqueue_client, args=(dsn, share, face, barrier, out))
                for _ in range(clients)
            ]
            for p in procs:
                p.start()
            spans = [out.get(timeout=600) for _ in procs]
            for p in procs:
                p.join()
    finally:
        system.drop_template()
    return share * clients / (max(e for _, e in spans) - min(s for s, _ in spans))


def run(sizes: Sizes, runs: int, peers: list[str], progress: Any = print) -> dict[str, Any]:
    admin = pg.admin_dsn()
    figures: dict[str, list[float]] = {}
    for r in range(runs):
        progress(f"async run {r + 1}/{runs}")
        steps: list[tuple[str, Any, tuple[Any, ...]]] = [
            ("sync no-op drain", _drain, (PgJobs(), admin, sizes.drain_jobs, sizes, r)),
            ("async no-op drain", _drain, (PgJobsAsync(), admin, sizes.drain_jobs, sizes, r)),
            ("enqueue sync", _enqueue_rate, (admin, "sync", sizes, r)),
            ("enqueue aio", _enqueue_rate, (admin, "aio", sizes, r)),
        ]
        for name in ["pgjobs", *peers]:
            system = IO_BOUND[name]()
            jobs = min(sizes.drain_jobs, system.drain_jobs_max or sizes.drain_jobs)
            steps.append((f"io drain {name}", _drain, (system, admin, jobs, sizes, r)))
        for label, step, args in steps:
            try:
                value = step(*args)
            except Exception as exc:
                progress(f"  FAILED {label}: {exc}")
                continue
            figures.setdefault(label, []).append(value)
            progress(f"  {label}: {value:,.0f} jobs/s")
    return figures


def _median(figures: dict[str, list[float]], key: str) -> float | None:
    values = figures.get(key)
    return statistics.median(values) if values else None


def report(figures: dict[str, list[float]], mode: str, peers: list[str]) -> str:
    def cell(key: str) -> str:
        values = figures.get(key)
        if not values:
            return "-"
        return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "-"

    ceiling = PROCESSES * CONCURRENCY / SLEEP_SECONDS
    io = _median(figures, "io drain pgjobs")
    best_peer = max(
        ((_median(figures, f"io drain {p}") or 0.0, p) for p in peers), default=(0.0, "-")
    )
    lines = [
        f"# pgjobs async figures, {dt.datetime.now().isoformat(timespec='seconds')}",
        "",
        f"Mode **{mode}**, {PROCESSES} worker processes; pgjobs async at "
        f"`--concurrency {CONCURRENCY}`. Cells: median jobs/s (min-max).",
        "",
        "| figure | jobs/s | ratio | target |",
        "|---|---|---|---|",
        f"| sync no-op drain | {cell('sync no-op drain')} | | |",
        f"| async no-op drain | {cell('async no-op drain')} | "
        f"{ratio(_median(figures, 'async no-op drain'), _median(figures, 'sync no-op drain'))}"
        " of sync | >= 0.90x |",
        f"| I/O-bound drain, pgjobs | {cell('io drain pgjobs')} | "
        f"{ratio(io, best_peer[0] or None)} of best peer ({best_peer[1]}) | >= 2x |",
        f"| ... its ceiling ({PROCESSES} x {CONCURRENCY} / {SLEEP_SECONDS} s) | {ceiling:,.0f} |"
        f" {ratio(io, ceiling)} of it | >= 0.80x |",
    ]
    lines += [f"| I/O-bound drain, {p} | {cell(f'io drain {p}')} | | |" for p in peers]
    lines += [
        f"| enqueue, sync, 1 per transaction | {cell('enqueue sync')} | | |",
        f"| enqueue, `await pgjobs.aio.enqueue`, 1 per transaction | {cell('enqueue aio')} | "
        f"{ratio(_median(figures, 'enqueue aio'), _median(figures, 'enqueue sync'))} of sync"
        " | >= 1x |",
        "",
        "Peers' configuration: PgQueuer one `QueueManager.run(batch_size=100)` per process"
        " (entrypoints without a concurrency limit), procrastinate one"
        " `run_worker(concurrency=10)` per process (drains capped at 5,000 jobs).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aio", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--systems", default="pgjobs,pgqueuer,procrastinate")
    args = parser.parse_args(argv)
    sizes = settings.QUICK if args.quick else settings.FULL
    wanted = [s.strip() for s in args.systems.split(",")]
    peers = [p for p in ("pgqueuer", "procrastinate") if p in wanted and IO_BOUND[p]().available()]
    figures = run(sizes, args.runs or sizes.runs, peers, lambda s: print(s, flush=True))
    text = report(figures, "quick" if args.quick else "full", peers)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{dt.datetime.now():%Y-%m-%dT%H%M%S}-async.md"
    path.write_text(text)
    print(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
