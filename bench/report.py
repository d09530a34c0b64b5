"""Results: raw JSON (bench/results/raw/, not committed), the Markdown table
with ratios, and the PNG chart."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import pickup
from bench.measure import summary

RESULTS = Path(__file__).with_name("results")

# (figure key, label, unit, higher is better)
FIGURES: list[tuple[str, str, str, bool]] = [
    ("enqueue_single", "enqueue, 1 job per transaction (2 clients)", "jobs/s", True),
    ("enqueue_bulk", "enqueue, 100 jobs per call (2 clients)", "jobs/s", True),
    ("drain_1_total", "drain, 1 process, with start-up", "jobs/s", True),
    ("drain_1_steady", "drain, 1 process, without start-up", "jobs/s", True),
    ("drain_2_total", "drain, 2 processes, with start-up", "jobs/s", True),
    ("drain_2_steady", "drain, 2 processes, without start-up", "jobs/s", True),
    ("drain_4_total", "drain, 4 processes, with start-up", "jobs/s", True),
    ("drain_4_steady", "drain, 4 processes, without start-up", "jobs/s", True),
    ("latency_p50_ms", "enqueue-to-start p50, idle worker", "ms", False),
    ("latency_p95_ms", "enqueue-to-start p95", "ms", False),
    ("latency_p99_ms", "enqueue-to-start p99", "ms", False),
    ("claim_empty_p50_ms", "claim 10, p50, table holds only the queued rows", "ms", False),
    ("claim_loaded_p50_ms", "claim 10, p50, {finished} finished + {queued} queued", "ms", False),
    ("claim_loaded_p99_ms", "claim 10, p99, loaded table", "ms", False),
    ("rss_mb_2", "RSS per worker process (peak, 2-process drain)", "MB", False),
]
FIGURES += pickup.REPORT_FIGURES  # pickup at a light load, many processes (bench/pickup.py)

# pgjobs figure -> the floor figure it is held against (at 2 clients).
FLOOR_OF = {
    "enqueue_single": "insert_1@2",
    "enqueue_bulk": "insert_100@2",
    "drain_1_steady": "claim_100_delete@2",
    "drain_2_steady": "claim_100_delete@2",
    "drain_4_steady": "claim_100_delete@2",
    "drain_2_total": "claim_100_delete@2",
    "claim_empty_p50_ms": "claim_empty_p50_ms",
    "claim_loaded_p50_ms": "claim_loaded_p50_ms",
    "claim_loaded_p99_ms": "claim_loaded_p99_ms",
}

# pgjobs figure -> the floor doing pgjobs' writes per job (work_*.sql, 2 clients).
WORK_FLOOR_OF = {
    "enqueue_bulk": "work_insert_100@2",
    "drain_1_steady": "work_claim_complete_100@2",
    "drain_2_steady": "work_claim_complete_100@2",
    "drain_4_steady": "work_claim_complete_100@2",
    "drain_2_total": "work_claim_complete_100@2",
}

FLOOR_FIGURES = [
    ("insert_1", "single-row INSERT"),
    ("insert_100", "100-row INSERT"),
    ("claim_1_delete", "claim 1 + DELETE"),
    ("claim_10_delete", "claim 10 + DELETE"),
    ("claim_100_delete", "claim 100 + DELETE"),
    ("claim_1_update", "claim 1 + UPDATE"),
    ("claim_10_update", "claim 10 + UPDATE"),
    ("claim_100_update", "claim 100 + UPDATE"),
    ("work_insert_100", "pgjobs' work: 100-row INSERT + one wake-up"),
    ("work_claim_complete_100", "pgjobs' work: claim 100 with lease + guarded completion, "
                                "history per state change"),
    ("work_claim_complete_attempt_100", "pgjobs' work, history per attempt"),
]


def write(result: dict[str, Any], out: str | Path | None = None) -> list[Path]:
    directory = Path(out) if out else RESULTS
    (directory / "raw").mkdir(parents=True, exist_ok=True)
    stem = result["meta"]["started"].replace(":", "")
    raw = directory / "raw" / f"{stem}.json"
    result["decay_targets"] = decay_targets(result)
    raw.write_text(json.dumps(result, indent=1, default=str))
    paths = [raw]
    chart = directory / f"{stem}.png"
    if _chart(result, chart):
        paths.append(chart)
    md = directory / f"{stem}.md"
    md.write_text(markdown(result, chart.name if chart in paths else None))
    paths.append(md)
    return paths


# -- numbers ------------------------------------------------------------------


def cell(values: list[float] | None, unit: str = "") -> str:
    if not values:
        return "-"
    s = summary(values)
    fmt = _fmt(s["median"])
    if len(values) == 1:
        return fmt
    return f"{fmt} ({_fmt(s['min'])}-{_fmt(s['max'])})"


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def median(values: list[float] | None) -> float | None:
    return summary(values)["median"] if values else None


def best_peer(result: dict[str, Any], key: str, higher: bool) -> tuple[str, float] | None:
    peers = [
        (name, m)
        for name, entry in result["systems"].items()
        if name != "pgjobs" and (m := median(entry["figures"].get(key))) is not None
    ]
    if not peers:
        return None
    choose: Callable[..., tuple[str, float]] = max if higher else min
    return choose(peers, key=lambda p: p[1])


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


# -- Markdown -----------------------------------------------------------------


def markdown(result: dict[str, Any], chart: str | None) -> str:
    meta = result["meta"]
    systems = result["systems"]
    names = list(systems)
    ours = systems.get("pgjobs", {"figures": {}})["figures"]
    floor = result["floor"]["figures"]
    lines = [
        f"# pgjobs benchmarks, {meta['started']}",
        "",
        f"Mode **{meta.get('mode', '?')}**, {meta['runs']} run(s) per figure, interleaved "
        "(run 1 of every system, then run 2...). Each cell: median (min-max). "
        "Ratios compare medians; for times (ms, MB) lower is better, so a ratio "
        "below 1x means pgjobs is ahead.",
        "",
        "| figure | unit | " + " | ".join(names)
        + " | pgjobs / best peer | pgjobs / floor | pgjobs / work floor |",
        "|---|---|" + "---|" * len(names) + "---|---|---|",
    ]
    sizes = meta.get("sizes", {})
    for key, label, unit, higher in FIGURES:
        label = label.format(finished=f"{sizes.get('claim_finished', 0):,}",
                             queued=f"{sizes.get('claim_queued', 0):,}")
        cells = [cell(systems[n]["figures"].get(key)) for n in names]
        if all(c == "-" for c in cells):
            continue
        peer = best_peer(result, key, higher)
        vs_peer = f"{ratio(median(ours.get(key)), peer[1])} ({peer[0]})" if peer else "-"
        floor_key = FLOOR_OF.get(key)
        vs_floor = ratio(median(ours.get(key)), median(floor.get(floor_key))) if floor_key else "-"
        work_key = WORK_FLOOR_OF.get(key)
        vs_work = ratio(median(ours.get(key)), median(floor.get(work_key))) if work_key else "-"
        lines.append(f"| {label} | {unit} | " + " | ".join(cells)
                     + f" | {vs_peer} | {vs_floor} | {vs_work} |")
    lines += ["", "## Raw-SQL floor (pgbench, bench/floor/*.sql)", ""]
    clients = sorted({int(k.split("@")[1]) for k in floor if "@" in k})
    if clients:
        lines.append("| statement | " + " | ".join(f"jobs/s @{c} clients" for c in clients) + " |")
        lines.append("|---|" + "---|" * len(clients))
        for key, label in FLOOR_FIGURES:
            lines.append(f"| {label} | " + " | ".join(
                cell(floor.get(f"{key}@{c}")) for c in clients) + " |")
        for key in ("claim_empty_p50_ms", "claim_loaded_p50_ms", "claim_loaded_p99_ms"):
            if floor.get(key):
                lines.append(f"| {key} (ms, 1 client) | {cell(floor[key])} |" +
                             " |" * (len(clients) - 1))
    for err in result["floor"].get("errors", []):
        lines.append(f"\n- floor error: {err}")

    lines += _decay_lines(result)

    lines += hosts_section(result.get("hosts"))

    if chart:
        lines += ["", f"![throughput and latency]({chart})"]

    lines += ["", "## Systems", "", "| system | version | configuration | notes |"]
    lines.append("|---|---|---|---|")
    for name, entry in systems.items():
        notes = entry["skipped"] or "; ".join(entry["errors"]) or ""
        lines.append(f"| {name} | {entry['version']} | {entry['config']} | {notes} |")
    lines += ["", "## Machine and Postgres", ""]
    for key, value in meta["machine"].items():
        lines.append(f"- {key}: {value}")
    lines.append("- sizes: " + ", ".join(f"{k}={v}" for k, v in meta["sizes"].items()))
    lines += ["", "| setting | value |", "|---|---|"]
    for key, value in meta["postgres"].items():
        lines.append(f"| {key} | {value} |")
    return "\n".join(lines) + "\n"


def hosts_section(hosts: dict[str, Any] | None) -> list[str]:
    """Workers on several hosts (bench/hosts.py): one row per layout, and
    where the drain stops rising, what bounds it."""
    if not hosts:
        return []
    lines = ["", "## Workers on several hosts (bench/hosts.py)", ""]
    if hosts.get("skipped"):
        return [*lines, f"Not run: {hosts['skipped']}."]
    cores = hosts["cores"]
    lines += [
        f"{hosts['jobs']:,} no-op jobs drained by `pgjobs worker --processes "
        f"{hosts['per_host']}` on each host: network namespaces of this machine, each "
        "reaching a private Postgres 15 over its own veth link and address. All hosts "
        f"share the same {cores} cores, so this shows that the protocol adds up across "
        "hosts (no cross-host contention), not more capacity. Postgres CPU: all its "
        f"processes, as a share of the {cores} cores; waits: the server's active "
        "sessions by wait event, mean per 100 ms sample. Jobs per Postgres CPU-second "
        "(jobs drained over the server's CPU time, start-up included) is what the machine's "
        "other load moves least.",
        "",
        "| layout | jobs/s | with start-up | vs 1 host | Postgres CPU | jobs per Postgres "
        "CPU-second | machine busy | active sessions | waiting on Lock | on LWLock | most seen |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = {label: points for label, points in hosts["layouts"].items() if points}
    base = median([p["steady"] for p in rows.get("1 host", [])])

    def med(points: list[dict[str, Any]], key: str) -> float:
        return summary([p[key] for p in points])["median"]

    for label, points in rows.items():
        waits: dict[str, float] = {}
        for p in points:
            for name, n in p["top_waits"].items():
                waits[name] = waits.get(name, 0.0) + n / len(points)
        top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(waits.items(), key=lambda w: -w[1])[:3])
        cells = [
            label, cell([p["steady"] for p in points]), cell([p["total"] for p in points]),
            ratio(med(points, "steady"), base), f"{med(points, 'postgres_cpu'):.0%}",
            cell([p["jobs_per_pg_cpu_s"] for p in points]), f"{med(points, 'machine_busy'):.0%}",
            *(f"{med(points, k):.2f}" for k in ("active", "lock_waits", "lwlock_waits")), top,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(_hosts_bound(rows, med))
    lines += [f"- error: {e}" for e in hosts.get("errors", [])]
    return lines


def _hosts_bound(rows: dict[str, list[dict[str, Any]]],
                 med: Callable[[list[dict[str, Any]], str], float]) -> str:
    """Where adding a host stops adding drain (< 10% more), and what is then
    saturated: lock waits, or the machine's cores (Postgres' share named)."""
    steps = [label for label in ("1 host", "2 hosts", "3 hosts") if label in rows]
    for before, after in itertools.pairwise(steps):
        if med(rows[after], "steady") < 1.1 * med(rows[before], "steady"):
            p = rows[after]
            if med(p, "lock_waits") + med(p, "lwlock_waits") >= 0.5:
                bound = (f"lock waits ({med(p, 'lock_waits'):.2f} sessions on Lock, "
                         f"{med(p, 'lwlock_waits'):.2f} on LWLock per sample)")
            elif med(p, "machine_busy") >= 0.9:
                bound = (f"the machine's cores ({med(p, 'machine_busy'):.0%} busy, "
                         f"{med(p, 'postgres_cpu'):.0%} of them Postgres')")
            else:
                bound = (f"neither CPU ({med(p, 'machine_busy'):.0%} busy) nor lock waits: "
                         "round trips")
            return f"Drain stops rising from {before} to {after}: bound by {bound}."
    return "Drain rises at every added host (by 10% or more)."


# -- no decay: the sustained runs (issue 19 item 3) -----------------------------

# (what is measured, the goal): each ratio must reach its goal.
DECAY_GOALS = {
    "steady_halves": 0.95,  # completed/s, second half of the steady part / first
    "backlog": 0.90,  # completed/s beside the finished jobs / on empty tables
    "idle_in_transaction": 0.90,  # completed/s / offered, a transaction left idle
    "repeatable_read_counts": 0.80,  # completed/s / offered, 4 count(*) loops
    # the same two at issue 19's own offered rate (settings.pressure_rate)
    "pressure_idle_in_transaction": 0.90,
    "pressure_repeatable_read_counts": 0.80,
}


def _mean_completed(series: list[dict[str, Any]]) -> float | None:
    return sum(p["completed_per_s"] for p in series) / len(series) if series else None


def steady_halves(series: list[dict[str, Any]]) -> float | None:
    """Completed/s over the second half of the steady windows / the first."""
    steady = [p for p in series if p.get("phase", "steady") == "steady"]
    half = len(steady) // 2
    if not half:
        return None
    first, last = _mean_completed(steady[:half]), _mean_completed(steady[-half:])
    return last / first if first and last is not None else None


def phase_share(sustained: dict[str, Any], phase: str) -> float | None:
    """Median completed/s of a pressure phase's windows / the offered rate."""
    points = [p["completed_per_s"] for p in sustained["series"] if p.get("phase") == phase]
    return (median(points) or 0.0) / sustained["target_rate"] if points else None


def backlog_ratio(backlog: dict[str, Any]) -> float | None:
    """Mean completed/s beside the finished jobs / on empty tables."""
    runs = backlog.get("runs", {})
    empty, loaded = _mean_completed(runs.get("empty", [])), _mean_completed(runs.get("loaded", []))
    return loaded / empty if empty and loaded is not None else None


def decay_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each no-decay target with its measured ratio (None: not measured) and
    whether it was met."""
    sustained, backlog = result.get("sustained"), result.get("backlog")
    found: list[tuple[str, str, float | None]] = []
    if sustained and sustained["series"]:
        found.append(("steady_halves", f"{sustained.get('fraction', 0.7):.0%} of peak for "
                      f"{sustained.get('seconds', 0):g} s: completed/s, second half / first half",
                      steady_halves(sustained["series"])))
        found.append(("idle_in_transaction", "a transaction left idle in transaction: "
                      "completed/s / offered", phase_share(sustained, "idle_in_transaction")))
        found.append(("repeatable_read_counts", "four REPEATABLE READ sessions looping count(*):"
                      " completed/s / offered", phase_share(sustained, "repeatable_read_counts")))
    pressed = result.get("pressure")
    if pressed and pressed["series"]:
        at = f"at {pressed['target_rate']:,.0f} jobs/s offered"
        found.append(("pressure_idle_in_transaction", f"{at}, a transaction left idle in "
                      "transaction: completed/s / offered",
                      phase_share(pressed, "idle_in_transaction")))
        found.append(("pressure_repeatable_read_counts", f"{at}, four REPEATABLE READ sessions "
                      "looping count(*): completed/s / offered",
                      phase_share(pressed, "repeatable_read_counts")))
    if backlog:
        found.insert(1, ("backlog", f"{backlog['fraction']:.0%} of peak for "
                         f"{backlog['seconds']:g} s beside {backlog['finished']:,} finished jobs:"
                         " completed/s / on empty tables", backlog_ratio(backlog)))
    return [{"key": key, "what": what, "goal": DECAY_GOALS[key], "ratio": r,
             "met": None if r is None else r >= DECAY_GOALS[key]} for key, what, r in found]


_WINDOW_COLUMNS = ("enqueued/s | completed/s | backlog | live tuples | dead tuples | heap MB | "
                   "index MB | tables MB | schema MB | buffers/job | reads/job | "
                   "index entries/job | CPU cores: pressure / server / machine |")
_WINDOW_COUNT = _WINDOW_COLUMNS.count("|")


def _window_cells(p: dict[str, Any]) -> str:
    return (f"{p['enqueued_per_s']:,.0f} | {p['completed_per_s']:,.0f} | {p['backlog']:,.0f} | "
            f"{p.get('live', 0):,.0f} | {p.get('dead', 0):,.0f} | {p.get('heap_mb', 0):.1f} | "
            f"{p.get('index_mb', 0):.1f} | {p.get('size_mb', 0):.1f} | "
            f"{p.get('schema_mb', 0):.1f} | {p.get('buffers_per_job', 0):.1f} | "
            f"{p.get('reads_per_job', 0):.2f} | {p.get('index_entries_per_job', 0):.1f} | "
            f"{p.get('cpu_pressure_cores', 0):.2f} / {p.get('cpu_server_cores', 0):.2f} / "
            f"{p.get('cpu_machine_cores', 0):.2f} |")


_PHASES = ("steady", "idle_in_transaction", "recovery", "repeatable_read_counts")


def phase_mean(run: dict[str, Any], phase: str, key: str) -> float | None:
    """Mean of a window figure over a phase's windows."""
    points = [p.get(key, 0.0) for p in run["series"] if p.get("phase") == phase]
    return sum(points) / len(points) if points else None


def _phase_lines(run: dict[str, Any]) -> list[str]:
    """A sustained run's windows and, per phase, completed/s / offered, the
    index entries read per job and the CPU the pressure's sessions took."""
    lines = ["| t (s) | phase | " + _WINDOW_COLUMNS, "|---|---|" + "---|" * _WINDOW_COUNT]
    lines += [f"| {p['t']:.0f} | {p.get('phase', 'steady')} | {_window_cells(p)}"
              for p in run["series"]]
    lines += ["", "| phase | completed/s / offered (median) | index entries/job | "
              "CPU cores: pressure / server / machine (mean) |", "|---|---|---|---|"]
    for ph in _PHASES:
        share = phase_share(run, ph)
        if share is None:
            continue
        cores = " / ".join(f"{phase_mean(run, ph, f'cpu_{k}_cores') or 0:.2f}"
                           for k in ("pressure", "server", "machine"))
        lines.append(f"| {ph} | {ratio(share, 1.0)} | "
                     f"{phase_mean(run, ph, 'index_entries_per_job') or 0:.1f} | {cores} |")
    return lines


def _decay_lines(result: dict[str, Any]) -> list[str]:
    targets = decay_targets(result)
    if not targets:
        return []
    lines = ["", "## No decay (issue 19 item 3)", "", "| target | goal | measured | met |",
             "|---|---|---|---|"]
    for t in targets:
        met = "-" if t["met"] is None else "yes" if t["met"] else "**no**"
        lines.append(f"| {t['what']} | ≥ {t['goal']:.2f}x | "
                     f"{ratio(t['ratio'], 1.0)} | {met} |")
    lines += ["", "Per window below: jobs, history and their indexes (tables MB: pgjobs.jobs "
              "and pgjobs.job_events, summed over their partitions; schema MB: every table of "
              "the schema), dead tuples, and per completed job the shared buffers heap and "
              "index scans touched and those read in from outside shared buffers."]
    sustained, backlog = result.get("sustained"), result.get("backlog")
    if sustained and sustained["series"]:
        lines += ["", f"### Sustained load: {sustained['system']} at "
                  f"{sustained['target_rate']:,.0f} jobs/s ({sustained.get('fraction', 0.7):.0%}"
                  " of its 2-process drain), 2 processes", ""]
        lines += _phase_lines(sustained)
    pressed = result.get("pressure")
    if pressed and pressed["series"]:
        lines += ["", f"### Pressure at issue 19's rate: {pressed['system']} at "
                  f"{pressed['target_rate']:,.0f} jobs/s offered, 2 processes", "",
                  f"{pressed['seconds']:g} s of the load alone, then the same phases "
                  "(the recovery shorter).", ""]
        lines += _phase_lines(pressed)
    if backlog and backlog["runs"]:
        seeded = backlog.get("seed_seconds")
        lines += ["", f"### Sustained with a backlog: {backlog['target_rate']:,.0f} jobs/s "
                  f"({backlog['fraction']:.0%} of the 2-process drain) for "
                  f"{backlog['seconds']:g} s, 2 processes", "",
                  f"On empty tables, then beside {backlog['finished']:,} completed jobs and their "
                  f"{backlog['events_per_job']} history rows each, finished over the last "
                  f"{backlog['days']:g} days" + (f" (seeded and vacuumed in {seeded:,.0f} s)"
                                                 if seeded else "") + ".", "",
                  "| run | t (s) | " + _WINDOW_COLUMNS, "|---|---|" + "---|" * _WINDOW_COUNT]
        for case, series in backlog["runs"].items():
            lines += [f"| {case} | {p['t']:.0f} | {_window_cells(p)}" for p in series]
        lines.append("")
        lines += [f"Completed/s {case}: mean {_fmt(_mean_completed(series) or 0)}, backlog at "
                  f"the end {series[-1]['backlog']:,.0f}." for case, series in
                  backlog["runs"].items() if series]
    return lines


# -- chart --------------------------------------------------------------------


def _chart(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    systems = {n: e for n, e in result["systems"].items() if e["figures"]}
    if not systems:
        return False
    has_sustained = bool(result.get("sustained") and result["sustained"]["series"])
    panels = 3 if has_sustained else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.3 * panels, 4.8))
    names = list(systems)
    procs = sorted({int(k.split("_")[1]) for e in systems.values()
                    for k in e["figures"] if k.startswith("drain_") and k.endswith("_steady")})
    width = 0.8 / max(1, len(procs))
    ax = axes[0]
    for i, p in enumerate(procs):
        meds, lo, hi = [], [], []
        for n in names:
            vals = systems[n]["figures"].get(f"drain_{p}_steady") or [0.0]
            s = summary(vals)
            meds.append(s["median"])
            lo.append(s["median"] - s["min"])
            hi.append(s["max"] - s["median"])
        xs = [j + i * width for j in range(len(names))]
        ax.bar(xs, meds, width, yerr=[lo, hi], capsize=3, label=f"{p} process(es)")
    floor = result["floor"]["figures"].get("claim_100_delete@2")
    if floor:
        ax.axhline(summary(floor)["median"], color="k", ls="--", lw=1,
                   label="floor: claim 100 + delete, 2 clients")
    ax.set_xticks([j + width * (len(procs) - 1) / 2 for j in range(len(names))], names)
    ax.set_ylabel("jobs/s (drain, without start-up)")
    ax.set_title("Throughput per system and worker processes")
    ax.legend(fontsize=8)

    ax = axes[1]
    pcts = (50, 95, 99)
    width = 0.8 / len(pcts)
    for i, p in enumerate(pcts):
        meds = [median(systems[n]["figures"].get(f"latency_p{p}_ms")) or 0.0 for n in names]
        ax.bar([j + i * width for j in range(len(names))], meds, width, label=f"p{p}")
    ax.set_xticks([j + width for j in range(len(names))], names)
    ax.set_ylabel("ms (enqueue to handler start)")
    ax.set_yscale("log")
    ax.set_title("Wake-up latency, idle worker")
    ax.legend(fontsize=8)

    if has_sustained:
        ax = axes[2]
        series = result["sustained"]["series"]
        ts = [p["t"] for p in series]
        ax.plot(ts, [p["completed_per_s"] for p in series], label="completed/s")
        ax.plot(ts, [p["enqueued_per_s"] for p in series], label="enqueued/s", ls=":")
        ax.set_xlabel("s")
        ax.set_ylabel("jobs/s")
        ax2 = ax.twinx()
        ax2.plot(ts, [p.get("dead", 0) for p in series], color="tab:red", label="dead tuples")
        ax2.set_ylabel("dead tuples")
        ax.set_title(f"Sustained: {result['sustained']['system']}")
        ax.legend(loc="lower left", fontsize=8)
        ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
