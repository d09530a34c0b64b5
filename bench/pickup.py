"""Pickup latency at a light steady load: enqueue-to-start per job while a
trickle of jobs, far under capacity, reaches many idle worker processes.

The idle figure (``measure.latency``) has one process. A deployment has many,
and then a job's wait depends on which of them the wake-up reaches, how many
wake for one job (each one's claim takes a CPU the winner needs), and whether
a busy process already holds the job in a batch claimed ahead. Jobs arrive as
a Poisson process (so some come together), each a ping whose handler reports
its start by UDP (``bench/apps/ping.py``); a sample is the time from just
before the enqueue call to that report. The CPU the workers and their server
sessions spend per job is measured alongside: what a wake-up costs.

``python -m bench.pickup --rounds 3 --variants base=/tmp/base,new=.`` runs
pgjobs workers from each checkout in turn (A/B, interleaved) and prints one
JSON line per run; ``--systems`` measures peers instead. ``BENCH_DSN`` picks
the server (32 pgjobs processes take about 70 sessions). ``make bench`` runs it
on a private cluster of its own (``roomy_server``): the peers' 32 processes
take more sessions than the shared server allows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil

from bench import measure, pg, servers, settings
from bench.held import cpu_seconds, process_cpu
from bench.settings import Sizes
from bench.systems import ALL, System
from bench.systems.base import PING_PORT_ENV, Client

PROCESSES = 32
RATE = 100.0  # jobs/s: a few percent of what 32 processes drain
WARMUP_SECONDS = 2.0  # of trickle before the samples: every process has claimed once
QUIET_CPU = 0.5  # cores: the workers are past their start-up once they use less
STRAGGLER_SECONDS = 10.0  # how long the last samples may take before a run fails
# Peers hold a session per concurrent task or pool slot: 32 processes of oban
# or procrastinate need more than the 100 a default server allows.
SESSIONS = 600

# (figure key, label, unit, higher is better), for bench/report.py
REPORT_FIGURES: list[tuple[str, str, str, bool]] = [
    ("pickup_p50_ms", f"enqueue-to-start p50, {RATE:.0f} jobs/s, {PROCESSES} processes",
     "ms", False),
    ("pickup_p95_ms", f"enqueue-to-start p95, {RATE:.0f} jobs/s, {PROCESSES} processes",
     "ms", False),
    ("pickup_p99_ms", f"enqueue-to-start p99, {RATE:.0f} jobs/s, {PROCESSES} processes",
     "ms", False),
    ("pickup_cpu_ms_per_job", "CPU per job at that load, workers + their sessions",
     "ms", False),
]


def samples_for(sizes: Sizes) -> int:
    """Five times the idle figure's samples: 1,000 (10 s) in full mode."""
    return sizes.latency_samples * 5


def processes_for(sizes: Sizes) -> int:
    """32, but 4 at the smoke test's sizes, which must stay quick."""
    return 4 if sizes == settings.TINY else PROCESSES


def record(system: System, sizes: Sizes, figures: dict[str, list[float]],
           progress: Callable[[str], None]) -> None:
    """The runner's hook: one pickup run on a fresh private cluster, into ``figures``."""
    processes = processes_for(sizes)
    with roomy_server(system.admin) as admin, pg.database(
        admin, pg.database_name(f"{system.name}_pickup")
    ) as dsn:
        system.install(dsn)
        out = pickup(system, dsn, processes, RATE, samples_for(sizes))
    for key in ("p50_ms", "p95_ms", "p99_ms", "cpu_ms_per_job"):
        figures.setdefault(f"pickup_{key}", []).append(out[key])
    progress(f"    pickup at {RATE:.0f}/s, {processes} processes, p50/p95/p99: "
             f"{out['p50_ms']:.1f} / {out['p95_ms']:.1f} / {out['p99_ms']:.1f} ms, "
             f"CPU {out['cpu_ms_per_job']:.1f} ms/job")


@contextlib.contextmanager
def roomy_server(admin: str) -> Iterator[str]:
    """A private cluster with ``admin``'s server's settings (bench.pg.MIRRORED)
    and SESSIONS sessions, so every system's processes get theirs: its admin DSN."""
    settings = {**pg.mirrored_settings(admin), "max_connections": str(SESSIONS)}
    with servers.private_server("pgjobs-bench-pickup-", settings) as server:
        yield server.dsn


class _Receiver(threading.Thread):
    """Collects the pings' start stamps, by sequence number."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stamps: dict[int, float] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                seq, stamp = self.sock.recv(100).decode().split()
            except TimeoutError:
                continue
            self.stamps[int(seq)] = float(stamp)

    def wait_for(self, seqs: list[int], seconds: float) -> list[int]:
        """The ``seqs`` still missing after at most ``seconds``."""
        deadline = time.monotonic() + seconds
        while (missing := [s for s in seqs if s not in self.stamps]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.01)
        return missing


@contextlib.contextmanager
def _receiving() -> Iterator[_Receiver]:
    receiver = _Receiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stopped.set()
        receiver.join()
        receiver.sock.close()


def _trickle(client: Client, seqs: range, rate: float, rng: random.Random,
             w: measure.Workers) -> dict[int, float]:
    """Enqueues a ping per seq at Poisson arrivals; when each was sent."""
    sent: dict[int, float] = {}
    next_at = time.monotonic()
    for seq in seqs:
        next_at += rng.expovariate(rate)
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent[seq] = time.time()
        client.enqueue(ping=seq)
        if seq % 100 == 0:
            w.check()
    return sent


def _until_quiet(w: measure.Workers, timeout: float) -> None:
    """Until the worker processes are past their start-up (imports, first
    sessions): 32 peers' processes starting on two cores take seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = [psutil.Process(p.pid) for p in w.procs] + w.job_processes()
        before = process_cpu(procs)
        time.sleep(0.5)
        w.check()
        if process_cpu(procs) - before < QUIET_CPU * 0.5:
            return
    raise measure.BenchError(f"{w.system.name}: workers still busy after {timeout:.0f}s")


def pickup(system: System, dsn: str, processes: int, rate: float, samples: int,
           timeout: float = 120.0, seed: int = 1) -> dict[str, Any]:
    """p50/p95/p99 of enqueue-to-start (ms) over ``samples`` pings sent at
    ``rate`` per second to ``processes`` idle worker processes, and the CPU
    per job (ms) of the workers and their server sessions meanwhile."""
    rng = random.Random(seed)
    client = system.client(dsn)
    try:
        with _receiving() as receiver, measure.workers(
            system, dsn, processes, {PING_PORT_ENV: str(receiver.port)}
        ) as w:
            deadline = time.monotonic() + timeout
            while receiver.wait_for([-1], 0.5):  # the workers run jobs at all
                w.check()
                if time.monotonic() > deadline:
                    raise measure.BenchError(f"{system.name}: no ping came back: {w.log()}")
                client.enqueue(ping=-1)
            _until_quiet(w, timeout)
            warm = int(rate * WARMUP_SECONDS)
            _trickle(client, range(-warm - 1, -1), rate, rng, w)
            cpu0 = cpu_seconds(w, dsn)
            sent = _trickle(client, range(samples), rate, rng, w)
            missing = receiver.wait_for(list(sent), STRAGGLER_SECONDS)
            cpu1 = cpu_seconds(w, dsn)
            if missing:
                raise measure.BenchError(f"{system.name}: {len(missing)} pings never started")
    finally:
        client.close()
    times = [(receiver.stamps[s] - t0) * 1000 for s, t0 in sent.items()]
    cpu = (cpu1[0] - cpu0[0]) + (cpu1[1] - cpu0[1])
    return {
        **{f"p{p}_ms": measure.percentile(times, p) for p in (50, 95, 99)},
        "cpu_ms_per_job": cpu / samples * 1000,
        "worker_cpu_ms_per_job": (cpu1[0] - cpu0[0]) / samples * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pickup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=PROCESSES)
    parser.add_argument("--rate", type=float, default=RATE, help="jobs/s")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repeats")
    parser.add_argument("--systems", default="pgjobs")
    parser.add_argument("--variants", default="",
                        help="label=checkout,... : pgjobs workers from each checkout in turn")
    args = parser.parse_args(argv)
    admin = pg.admin_dsn()
    variants = [v.split("=", 1) for v in args.variants.split(",") if v] or [["", ""]]
    systems = [ALL[name.strip()]() for name in args.systems.split(",")]
    for system in systems:
        system.prepare_template(admin, 0)
    try:
        for _ in range(args.rounds):
            for system in systems:
                for label, path in variants:
                    os.environ["BENCH_WORKER_PATH"] = path
                    with system.fresh("pickup") as dsn:
                        out = pickup(system, dsn, args.processes, args.rate, args.samples)
                    print(json.dumps({"system": system.name, "variant": label,
                                      **{k: round(v, 3) for k, v in out.items()}}), flush=True)
    finally:
        for system in systems:
            system.drop_template()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
