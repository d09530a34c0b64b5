"""The benchmark harness runs end to end at tiny sizes: every figure comes out,
positive and finite, and the report is written. Speed is never asserted here.

pgjobs and the raw-SQL floor always run; a peer (procrastinate, PgQueuer,
oban, RQ) runs only when its package is importable, which in the main .venv it
is not: they live in .venv-bench (`make bench`)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import math

import psycopg
import pytest

import pgjobs
from bench import floor, pickup, report, runner, settings
from bench.systems import ALL
from bench.systems.pgjobs import EVENTS_PER_FINISHED_JOB, seed_finished

SYSTEM_FIGURES = [
    "enqueue_single",
    "enqueue_bulk",
    *(f"drain_{p}_{kind}" for p in settings.TINY.drain_processes for kind in ("total", "steady")),
    *(f"rss_mb_{p}" for p in settings.TINY.drain_processes),
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    *(key for key, *_ in pickup.REPORT_FIGURES),
]
CLAIM_FIGURES = ["claim_empty_p50_ms", "claim_loaded_p50_ms", "claim_loaded_p99_ms"]


def _sane(values: list[float]) -> bool:
    return bool(values) and all(math.isfinite(v) and v > 0 for v in values)


def test_seeded_finished_jobs_look_like_ones_a_worker_finished(dsn):
    """The backlog the sustained-with-backlog run seeds holds what finishing
    jobs leaves: the same history rows per job as a job really run (so a
    change to what pgjobs records shows here), spread over the days asked,
    found by the public calls."""
    import bench.apps.pgjobs  # noqa: F401  (registers bench.noop)
    from pgjobs import registry

    with psycopg.connect(dsn, autocommit=True) as conn:
        registry.sync(conn)
        real = pgjobs.enqueue(conn, "bench.noop", {})
        assert pgjobs.testing.run_job(conn, real.id).state is pgjobs.State.COMPLETED
        seed_finished(dsn, 50, history=True, days=7)
        ids = [r[0] for r in conn.execute(
            "select id from pgjobs.jobs where id <> %s order by finished_at", [real.id])]
        assert len(ids) == 50 and ids == sorted(ids) and real.id not in ids
        span = conn.execute(
            "select now() - min(finished_at), now() - max(finished_at) from pgjobs.jobs"
            " where id = any(%s)", [ids]).fetchone()
        assert dt.timedelta(days=6.8) < span[0] <= dt.timedelta(days=7)
        assert span[1] < dt.timedelta(minutes=5)

        def changes(job_id: int) -> list[tuple[str | None, str]]:
            return [(e.from_state, e.to_state) for e in pgjobs.history(conn, job_id)]

        assert len(changes(real.id)) == EVENTS_PER_FINISHED_JOB
        for job_id in (ids[0], ids[-1]):
            assert pgjobs.get(conn, job_id).state is pgjobs.State.COMPLETED
            assert changes(job_id) == changes(real.id)
        # Later enqueues draw ids past the seeded ones.
        assert pgjobs.enqueue(conn, "bench.noop", {}).id > ids[-1]


@pytest.mark.slow
def test_bench_produces_every_figure_and_the_report(server_dsn, tmp_path):
    available = [name for name, cls in ALL.items() if cls().available()]
    assert "pgjobs" in available
    result = runner.run(settings.TINY, available, admin=server_dsn, progress=lambda s: None)

    for name in available:
        entry = result["systems"][name]
        assert entry["errors"] == [], (name, entry["errors"])
        for key in SYSTEM_FIGURES + (CLAIM_FIGURES if name == "pgjobs" else []):
            assert _sane(entry["figures"].get(key, [])), (name, key, entry["figures"].get(key))
        figs = entry["figures"]
        assert figs["latency_p50_ms"][0] <= figs["latency_p99_ms"][0]
        assert 1 < figs["rss_mb_2"][0] < 2000

    if floor.pgbench_path() is None:
        pytest.skip("pgbench not installed: the floor cannot run")
    floor_figs = result["floor"]["figures"]
    assert result["floor"]["errors"] == []
    for key, _label in report.FLOOR_FIGURES:
        assert _sane(floor_figs.get(f"{key}@2", [])), key
    for key in CLAIM_FIGURES:
        assert _sane(floor_figs.get(key, [])), key

    sustained = result["sustained"]
    assert sustained is not None and sustained["series"]
    assert all(p["enqueued_per_s"] > 0 and p["size_mb"] > 0 for p in sustained["series"])
    # Every phase gets its windows, the last one's included.
    phases = {p["phase"] for p in sustained["series"]}
    assert {"steady", "idle_in_transaction", "repeatable_read_counts"} <= phases, phases
    # The same phases at issue 19's own rate, with the pressure's server CPU.
    pressed = result["pressure"]
    assert pressed is not None and pressed["target_rate"] == settings.TINY.pressure_rate
    assert {"steady", "idle_in_transaction", "repeatable_read_counts"} <= {
        p["phase"] for p in pressed["series"]}
    assert all(p["cpu_server_cores"] >= p["cpu_pressure_cores"] >= 0 for p in pressed["series"])
    backlog = result["backlog"]
    assert backlog is not None and set(backlog["runs"]) == {"empty", "loaded"}
    empty, loaded = backlog["runs"]["empty"], backlog["runs"]["loaded"]
    assert empty and loaded
    # The seeded jobs and their history are in the tables the loaded run measures.
    seeded = settings.TINY.backlog_finished * (1 + backlog["events_per_job"])
    assert loaded[0]["live"] - empty[0]["live"] >= seeded * 0.9, (empty[0], loaded[0])
    assert all(p["reads_per_job"] >= 0 and p["schema_mb"] >= p["size_mb"] for p in loaded)

    hosts = result["hosts"]  # skipped only where namespaces cannot be made (tests/test_hosts.py)
    assert hosts["errors"] == []
    if hosts["skipped"] is None:
        assert all(_sane([p["steady"] for p in points]) and points[0]["postgres_cpu"] > 0
                   for points in hosts["layouts"].values()), hosts

    paths = report.write(result, tmp_path)
    md = next(p for p in paths if p.suffix == ".md").read_text()
    assert "pgjobs / best peer" in md and "pgjobs / floor" in md
    assert "shared_buffers" in md
    assert "Workers on several hosts" in md
    assert "## No decay" in md and "beside 2,000 finished jobs" in md
    assert [t["key"] for t in result["decay_targets"]] == [
        "steady_halves", "backlog", "idle_in_transaction", "repeatable_read_counts",
        "pressure_idle_in_transaction", "pressure_repeatable_read_counts"]
    if importlib.util.find_spec("matplotlib"):
        assert any(p.suffix == ".png" for p in paths)
