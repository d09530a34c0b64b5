"""Composes one benchmark session: every system, the floor, in interleaved runs
(run 1 of each, then run 2 of each...) so a noisy minute hurts all alike."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import psutil

from bench import measure, pg, pickup
from bench.floor import Floor
from bench.settings import Sizes
from bench.systems import ALL, System

Progress = Callable[[str], None]


def machine() -> dict[str, Any]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                "?",
            )
    except OSError:
        pass
    return {
        "cpu": f"{os.cpu_count()} x {model}",
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "loadavg_start": os.getloadavg(),
    }


def run(
    sizes: Sizes,
    systems: Sequence[str],
    *,
    runs: int | None = None,
    admin: str | None = None,
    with_floor: bool = True,
    with_sustained: bool = True,
    with_hosts: bool = True,
    with_backlog: bool = True,
    progress: Progress = print,
) -> dict[str, Any]:
    admin = admin or pg.admin_dsn()
    runs = runs or sizes.runs
    started = dt.datetime.now()
    result: dict[str, Any] = {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "runs": runs,
            "sizes": {k: v for k, v in vars(sizes).items()},
            "machine": machine(),
            "postgres": pg.server_settings(admin),
        },
        "systems": {},
        "floor": {"figures": {}, "errors": []},
        "sustained": None,
        "pressure": None,
        "backlog": None,
    }
    chosen: list[System] = []
    for name in systems:
        system = ALL[name]()
        entry: dict[str, Any] = {
            "version": system.version(), "config": system.config,
            "figures": {}, "errors": [], "skipped": None,
        }
        result["systems"][name] = entry
        if system.available():
            chosen.append(system)
        else:
            entry["skipped"] = f"{', '.join(system.packages)} not installed"
            progress(f"skip {name}: {entry['skipped']}")

    floor = Floor(admin)
    for r in range(runs):
        progress(f"run {r + 1}/{runs}")
        if with_floor:
            _floor_run(floor, sizes, result["floor"], progress)
        for system in chosen:
            _system_run(system, admin, sizes, r, result["systems"][system.name], progress)

    if with_sustained and "pgjobs" in [s.name for s in chosen]:
        pgjobs = next(s for s in chosen if s.name == "pgjobs")
        result["sustained"] = _sustained(pgjobs, admin, sizes, result, progress)
        result["pressure"] = _pressure(pgjobs, admin, sizes, result, progress)
        if with_backlog:
            result["backlog"] = _backlog(pgjobs, admin, sizes, result, progress)
    if with_hosts and "pgjobs" in [s.name for s in chosen]:
        from bench import hosts  # workers on several hosts: its own private server

        result["hosts"] = hosts.run(sizes, runs, progress)
    result["meta"]["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    result["meta"]["machine"]["loadavg_end"] = os.getloadavg()
    return result


def _add(figures: dict[str, list[float]], key: str, value: float) -> None:
    figures.setdefault(key, []).append(value)


def _guarded(entry: dict[str, Any], what: str, progress: Progress, fn: Callable[[], None]) -> None:
    """One measurement; its failure is recorded and the session goes on."""
    try:
        fn()
    except Exception as exc:
        entry["errors"].append(f"{what}: {exc}")
        progress(f"  FAILED {what}: {exc}")
        if os.environ.get("BENCH_DEBUG"):
            traceback.print_exc()


def _floor_run(floor: Floor, sizes: Sizes, entry: dict[str, Any], progress: Progress) -> None:
    if not floor.available():
        entry["errors"].append("pgbench not found")
        return
    floor.prepare_template()
    try:
        for clients in sizes.floor_clients:
            def once(clients: int = clients) -> None:
                figures = floor.run(clients, sizes.floor_transactions)
                for key, value in figures.items():
                    _add(entry["figures"], f"{key}@{clients}", value)
                progress(f"  floor @{clients}: " + ", ".join(
                    f"{k}={v:,.0f}" for k, v in figures.items()))
            _guarded(entry, f"pgbench @{clients}", progress, once)

        def claims() -> None:
            _claim_pair(floor, floor.fresh, sizes, entry["figures"], progress, "floor")

        _guarded(entry, "claim latency", progress, claims)
    finally:
        floor.drop_template()


def _claim_pair(target: Any, fresh: Callable[[str], Any], sizes: Sizes,
                figures: dict[str, list[float]], progress: Progress, label: str) -> None:
    """Claim latency on a table holding only what is claimed vs a loaded one."""
    need = sizes.claim_samples * sizes.claim_batch + sizes.claim_batch
    statement = target.claim_statement(sizes.claim_batch)
    for case, finished, queued in (
        ("empty", 0, need),
        ("loaded", sizes.claim_finished, max(sizes.claim_queued, need)),
    ):
        with fresh(f"claim_{case}") as dsn:
            target.seed(dsn, finished, queued)
            times = measure.claim_latency(dsn, statement, sizes.claim_samples)
        _add(figures, f"claim_{case}_p50_ms", measure.percentile(times, 50))
        _add(figures, f"claim_{case}_p99_ms", measure.percentile(times, 99))
        progress(f"  {label} claim {case}: p50 {measure.percentile(times, 50):.2f} ms")


def _system_run(system: System, admin: str, sizes: Sizes, r: int, entry: dict[str, Any],
                progress: Progress) -> None:
    figures = entry["figures"]
    progress(f"  {system.name}")
    try:
        system.prepare_template(admin, r)
    except Exception as exc:
        entry["errors"].append(f"install: {exc}")
        progress(f"  FAILED install: {exc}")
        return
    try:
        for label, batch in (("enqueue_single", 1), ("enqueue_bulk", sizes.bulk_batch)):
            def enqueue(label: str = label, batch: int = batch) -> None:
                jobs = sizes.enqueue_jobs * (10 if batch > 1 else 1)
                with system.fresh(label) as dsn:
                    rate = measure.enqueue_rate(
                        system, dsn, jobs, sizes.enqueue_clients, batch)
                _add(figures, label, rate)
                progress(f"    {label}: {rate:,.0f} jobs/s")
            _guarded(entry, label, progress, enqueue)

        for procs in sizes.drain_processes:
            def drain(procs: int = procs) -> None:
                jobs = min(sizes.drain_jobs, system.drain_jobs_max or sizes.drain_jobs)
                with system.fresh(f"drain{procs}") as dsn:
                    d = measure.drain(system, dsn, jobs, procs, sizes.worker_timeout)
                _add(figures, f"drain_{procs}_total", d["total"])
                _add(figures, f"drain_{procs}_steady", d["steady"])
                _add(figures, f"rss_mb_{procs}", d["rss_mb"])
                progress(f"    drain x{procs}: {d['total']:,.0f} jobs/s with start-up, "
                         f"{d['steady']:,.0f} without; rss {d['rss_mb']:.0f} MB")
            _guarded(entry, f"drain x{procs}", progress, drain)

        def latency() -> None:
            with system.fresh("latency") as dsn:
                samples = measure.latency(system, dsn, sizes.latency_samples)
            entry.setdefault("latency_samples", []).extend(samples)
            for p in (50, 95, 99):
                _add(figures, f"latency_p{p}_ms", measure.percentile(samples, p))
            progress("    latency p50/p95/p99: " + " / ".join(
                f"{measure.percentile(samples, p):.1f}" for p in (50, 95, 99)) + " ms")
        _guarded(entry, "latency", progress, latency)
        if system.uses_postgres:  # its CPU per job counts the server sessions of the database
            _guarded(entry, "pickup", progress,
                     lambda: pickup.record(system, sizes, figures, progress))

        if hasattr(system, "seed"):
            _guarded(entry, "claim latency", progress, lambda: _claim_pair(
                system, system.fresh, sizes, figures, progress, system.name))
    finally:
        system.drop_template()


def _sustained(system: System, admin: str, sizes: Sizes, result: dict[str, Any],
               progress: Progress) -> dict[str, Any] | None:
    """The sustained run at ``sustained_fraction`` of the peak, then the pressure phases."""
    rate = _peak(result, system) * sizes.sustained_fraction
    return _steady_then_pressure(
        system, admin, result, progress, "sustained", 99, rate, sizes.sustained_fraction,
        sizes.sustained_seconds, sizes.sustained_window,
        _phases(sizes, sizes.pressure_seconds))


def _phases(sizes: Sizes, recovery: float) -> list[tuple[str, float]] | None:
    """The pressure phases of a sustained run (bench/pressure.py); None: none."""
    p = sizes.pressure_seconds
    if p <= 0:
        return None
    return [("idle_in_transaction", p), ("recovery", recovery), ("repeatable_read_counts", p)]


def _pressure(system: System, admin: str, sizes: Sizes, result: dict[str, Any],
              progress: Progress) -> dict[str, Any] | None:
    """The pressure phases again at the fixed offered rate of issue 19
    (``pressure_rate``), after ``pressure_lead_seconds`` of that load alone."""
    if sizes.pressure_seconds <= 0:
        return None
    return _steady_then_pressure(
        system, admin, result, progress, "pressure", 97, sizes.pressure_rate, None,
        sizes.pressure_lead_seconds, sizes.sustained_window,
        _phases(sizes, sizes.pressure_recovery_seconds))


def _steady_then_pressure(system: System, admin: str, result: dict[str, Any],
                          progress: Progress, label: str, template: int, rate: float,
                          fraction: float | None, seconds: float, window: float,
                          phases: list[tuple[str, float]] | None) -> dict[str, Any] | None:
    """``rate`` jobs/s offered for ``seconds`` on fresh tables, then ``phases``."""
    if not rate:
        return None
    progress(f"{label}: {system.name} at {rate:,.0f} jobs/s for {seconds:.0f}s")
    system.prepare_template(admin, template)
    try:
        with system.fresh(label) as dsn:
            series = measure.sustained(system, dsn, rate, seconds, window, phases=phases,
                                       on_window=lambda p: progress(_window_line(p)))
    except Exception as exc:
        result["systems"][system.name]["errors"].append(f"{label}: {exc}")
        progress(f"  FAILED {label}: {exc}")
        return None
    finally:
        system.drop_template()
    return {"system": system.name, "target_rate": rate, "fraction": fraction,
            "seconds": seconds, "series": series}


def _peak(result: dict[str, Any], system: System) -> float:
    """The system's measured peak: its 2-process drain without start-up (0: none)."""
    peaks = result["systems"][system.name]["figures"].get("drain_2_steady")
    return measure.summary(peaks)["median"] if peaks else 0.0


def _window_line(p: dict[str, Any]) -> str:
    return (f"  t={p['t']:.0f}s {p['phase']} done {p['completed_per_s']:,.0f}/s backlog "
            f"{p['backlog']:.0f} dead {p.get('dead', 0):.0f} size {p.get('size_mb', 0):.1f} MB "
            f"reads/job {p.get('reads_per_job', 0):.2f} "
            f"index entries/job {p.get('index_entries_per_job', 0):.1f} "
            f"cpu pressure/server/machine {p.get('cpu_pressure_cores', 0):.2f}/"
            f"{p.get('cpu_server_cores', 0):.2f}/{p.get('cpu_machine_cores', 0):.2f}")


def _backlog(system: System, admin: str, sizes: Sizes, result: dict[str, Any],
             progress: Progress) -> dict[str, Any] | None:
    """The sustained run at ``backlog_fraction`` of the peak on empty tables,
    then beside ``backlog_finished`` finished jobs and their history."""
    from bench.systems.pgjobs import EVENTS_PER_FINISHED_JOB, seed_finished

    rate = _peak(result, system) * sizes.backlog_fraction
    if not rate:
        return None
    entry: dict[str, Any] = {
        "system": system.name, "target_rate": rate, "fraction": sizes.backlog_fraction,
        "seconds": sizes.backlog_seconds, "finished": sizes.backlog_finished,
        "events_per_job": EVENTS_PER_FINISHED_JOB, "days": sizes.backlog_days,
        "seed_seconds": None, "runs": {},
    }
    system.prepare_template(admin, 98)
    try:
        for case, finished in (("empty", 0), ("loaded", sizes.backlog_finished)):
            with system.fresh(f"backlog_{case}") as dsn:
                t0 = time.monotonic()
                if finished:
                    progress(f"backlog: seeding {finished:,} finished jobs with history")
                    seed_finished(dsn, finished, history=True, days=sizes.backlog_days,
                                  progress=lambda n: progress(f"  {n:,} seeded"))
                pg.settle(dsn, system.tables)  # both cases alike: vacuumed, checkpointed
                if finished:
                    entry["seed_seconds"] = time.monotonic() - t0
                progress(f"backlog: {case}, {rate:,.0f} jobs/s for {sizes.backlog_seconds:.0f}s")
                entry["runs"][case] = measure.sustained(
                    system, dsn, rate, sizes.backlog_seconds, sizes.sustained_window,
                    on_window=lambda p: progress(_window_line(p)))
    except Exception as exc:
        result["systems"][system.name]["errors"].append(f"backlog: {exc}")
        progress(f"  FAILED backlog: {exc}")
    finally:
        system.drop_template()
    return entry
