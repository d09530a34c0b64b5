"""The benchmark harness runs end to end at tiny sizes: every figure comes out,
positive and finite, and the report is written. Speed is never asserted here.

pgjobs and the raw-SQL floor always run; a peer (procrastinate, PgQueuer,
oban, RQ) runs only when its package is importable, which in the main .venv it
is not: they live in .venv-bench (`make bench`)."""

from __future__ import annotations

import importlib.util
import math

import pytest

from bench import floor, pickup, report, runner, settings
from bench.systems import ALL

pytestmark = pytest.mark.slow

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

    paths = report.write(result, tmp_path)
    md = next(p for p in paths if p.suffix == ".md").read_text()
    assert "pgjobs / best peer" in md and "pgjobs / floor" in md
    assert "shared_buffers" in md
    if importlib.util.find_spec("matplotlib"):
        assert any(p.suffix == ".png" for p in paths)
