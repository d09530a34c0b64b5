"""The measurements, written once against the System interface."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench import pg, pressure
from bench.systems.base import PING_PORT_ENV, System, worker_env

POLL_SECONDS = 0.02


class BenchError(RuntimeError):
    """A measurement that could not complete (a worker died, a drain stalled)."""


# -- statistics ---------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# -- enqueue ------------------------------------------------------------------


def _enqueue_client(
    system_name: str, dsn: str, count: int, batch: int, barrier: Any, out: Any
) -> None:
    from bench.systems import ALL

    client = ALL[system_name]().client(dsn)
    try:
        barrier.wait()
        start = time.time()
        if batch == 1:
            for _ in range(count):
                client.enqueue()
        else:
            for done in range(0, count, batch):
                client.enqueue_batch(min(batch, count - done))
        out.put((start, time.time()))
    finally:
        client.close()


def enqueue_rate(system: System, dsn: str, total: int, clients: int, batch: int) -> float:
    """Jobs/s with ``clients`` processes enqueueing ``total`` jobs, one per
    transaction (batch 1) or ``batch`` per call; connecting is not timed."""
    # fork: the harness holds no connection or event loop while clients start.
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(clients)
    out = ctx.Queue()
    share = total // clients
    procs = [
        ctx.Process(target=_enqueue_client, args=(system.name, dsn, share, batch, barrier, out))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    spans = []
    deadline = time.monotonic() + 600
    while len(spans) < clients:
        try:
            spans.append(out.get(timeout=0.5))
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                for p in procs:
                    p.kill()
                raise BenchError(f"{system.name}: an enqueue client failed") from None
    for p in procs:
        p.join()
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    return share * clients / elapsed


def fill(system: System, dsn: str, count: int, chunk: int = 1000) -> None:
    client = system.client(dsn)
    try:
        for done in range(0, count, chunk):
            client.enqueue_batch(min(chunk, count - done))
    finally:
        client.close()


# -- worker processes ---------------------------------------------------------


class Workers:
    """The worker processes of one measurement, their logs and their memory."""

    def __init__(self, system: System, dsn: str, processes: int, env: dict[str, str]) -> None:
        self.system = system
        self.logdir = Path(tempfile.mkdtemp(prefix=f"bench-{system.name}-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        for i, cmd in enumerate(system.worker_commands(dsn, processes)):
            log = open(self.logdir / f"worker{i}.log", "wb")  # noqa: SIM115 (closed by the child)
            self.procs.append(
                subprocess.Popen(
                    cmd, env=worker_env(env), stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log.close()
        self.rss_peak: dict[int, int] = {}

    def check(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise BenchError(f"{self.system.name}: worker exited {p.returncode}: {self.log()}")

    def log(self) -> str:
        text = "".join(f.read_text(errors="replace") for f in sorted(self.logdir.iterdir()))
        return text[-2000:]

    def job_processes(self) -> list[psutil.Process]:
        """The processes that run jobs: a supervisor's children, else the process."""
        found: list[psutil.Process] = []
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(p.pid)
                children = proc.children(recursive=True)
                found.extend(children or [proc])
        return found

    def sample_rss(self) -> None:
        for proc in self.job_processes():
            with contextlib.suppress(psutil.Error):
                rss = proc.memory_info().rss
                self.rss_peak[proc.pid] = max(rss, self.rss_peak.get(proc.pid, 0))

    def rss_mb(self) -> float:
        """Peak RSS of the largest worker process, MB."""
        return max(self.rss_peak.values(), default=0) / 2**20

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    import os

                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        # Their logs reach a report only through a BenchError, raised before.
        shutil.rmtree(self.logdir, ignore_errors=True)


@contextlib.contextmanager
def workers(
    system: System, dsn: str, processes: int, env: dict[str, str] | None = None
) -> Iterator[Workers]:
    w = Workers(system, dsn, processes, env or {})
    try:
        yield w
    finally:
        w.stop()


# -- drain --------------------------------------------------------------------


def drain(
    system: System, dsn: str, jobs: int, processes: int, timeout: float,
    watch: contextlib.AbstractContextManager[Any] | None = None,
) -> dict[str, float]:
    """Runs ``jobs`` pre-enqueued no-op jobs to the end. ``total``: jobs/s from
    starting the workers; ``steady``: from the first finished job on. ``watch``
    is entered as the workers start and left when the last job is done (a
    sampler of the server, bench/hosts.py)."""
    fill(system, dsn, jobs)
    with system.probe(dsn) as remaining:
        if remaining() != jobs:
            raise BenchError(f"{system.name}: {remaining()} jobs queued, wanted {jobs}")
        started = time.monotonic()
        first: tuple[float, int] | None = None
        untouched = started  # the last poll that found every job still queued
        last_rss = 0.0
        with workers(system, dsn, processes) as w, watch or contextlib.nullcontext():
            while True:
                left = remaining()
                now = time.monotonic()
                if first is None:
                    if left < jobs:
                        first = (now, left)
                    else:
                        untouched = now
                if left == 0:
                    break
                if now - last_rss > 0.25:
                    w.sample_rss()
                    w.check()
                    last_rss = now
                if now - started > timeout:
                    raise BenchError(f"{system.name}: {left} jobs left after {timeout:.0f}s")
                time.sleep(POLL_SECONDS)
            w.sample_rss()
            rss = w.rss_mb()
    assert first is not None
    end = now
    # Jobs done after the first poll that saw progress, over the time since; when
    # that poll already saw all done (tiny runs), from the last untouched poll.
    steady = first[1] / (end - first[0]) if first[1] else jobs / (end - untouched)
    return {
        "total": jobs / (end - started),
        "steady": steady,
        "startup_s": first[0] - started,
        "rss_mb": rss,
    }


# -- enqueue-to-start latency -------------------------------------------------


def latency(system: System, dsn: str, samples: int, timeout: float = 60.0) -> list[float]:
    """Milliseconds from just before the enqueue call to the handler's start,
    one job at a time, on an idle 1-process worker."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    client = system.client(dsn)
    results: list[float] = []
    try:
        with workers(system, dsn, 1, {PING_PORT_ENV: str(port)}) as w:
            # Warm-up: wait until the worker runs jobs at all.
            sock.settimeout(0.5)
            deadline = time.monotonic() + timeout
            while True:
                w.check()
                client.enqueue(ping=-1)
                with contextlib.suppress(TimeoutError):
                    sock.recv(100)
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"{system.name}: no ping came back: {w.log()}")
            time.sleep(0.5)
            _drain_socket(sock)
            sock.settimeout(10)
            for seq in range(samples):
                time.sleep(0.03)  # idle again: the worker waits on LISTEN or its poll
                t0 = time.time()
                client.enqueue(ping=seq)
                while True:
                    got, stamp = sock.recv(100).decode().split()
                    if int(got) == seq:
                        results.append((float(stamp) - t0) * 1000)
                        break
            w.sample_rss()
    finally:
        client.close()
        sock.close()
    return results


def _drain_socket(sock: socket.socket) -> None:
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            sock.recv(100)
    sock.setblocking(True)


# -- claim latency ------------------------------------------------------------


def claim_latency(dsn: str, statement: str, samples: int) -> list[float]:
    """Milliseconds per claim transaction (statement + commit)."""
    times = []
    with psycopg.connect(dsn) as conn:
        conn.execute(statement).fetchall()  # plan cached, caches warm
        conn.commit()
        for _ in range(samples):
            t0 = time.perf_counter()
            rows = conn.execute(statement).fetchall()
            conn.commit()
            times.append((time.perf_counter() - t0) * 1000)
            if not rows:
                raise BenchError("the claim found nothing: seed more queued rows")
    return times


# -- sustained load -----------------------------------------------------------


def sustained(
    system: System,
    dsn: str,
    rate: float,
    seconds: float,
    window: float,
    processes: int = 2,
    on_window: Callable[[dict[str, float]], None] | None = None,
    phases: list[tuple[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Enqueues at ``rate`` jobs/s (batches of up to 500, so that one client
    keeps up with a fast system) with the workers running; per window: rates,
    backlog, dead tuples, table and index sizes, buffers touched and read
    per job (pg.table_stats).
    ``phases`` (name, seconds), run in turn after the first ``seconds``, put
    another client's pressure on the database (bench/pressure.py)."""
    client = system.client(dsn)
    series: list[dict[str, Any]] = []
    schedule = [("steady", seconds), *(phases or [])]
    ends = [sum(s for _, s in schedule[: i + 1]) for i in range(len(schedule))]
    try:
        with (
            system.probe(dsn) as remaining,
            workers(system, dsn, processes) as w,
            _stats_conn(system, dsn) as stats,
            contextlib.ExitStack() as pressing,
        ):
            start = time.monotonic()
            sent = phase = mark_phase = 0
            meter = _Meter(start, remaining, stats)
            close_at = window
            while True:
                t = (now := time.monotonic()) - start
                over = t >= ends[-1]
                if not over and t >= ends[phase]:
                    phase += 1
                    pressing.close()
                    pressing.enter_context(
                        pressure.pressure(schedule[phase][0], dsn, system.tables[0]))
                due = 0 if over else int(rate * t) - sent
                if due > 0:
                    n = min(due, 500)
                    client.enqueue_batch(n)
                    sent += n
                elif not over:
                    time.sleep(0.005)
                # Windows on a grid from the start, the run's last one included
                # unless it is under half a window long.
                if t >= close_at or (over and now - meter.mark[0] >= window / 2):
                    w.check()
                    w.sample_rss()
                    series.append(meter.close(now, sent, schedule[mark_phase][0]))
                    mark_phase = phase  # a window is named for the phase it began in
                    close_at = (t // window + 1) * window
                    if on_window:
                        on_window(series[-1])
                if over:
                    break
    finally:
        client.close()
    return series


class _Meter:
    """The figures of one window of a sustained run, from the last one's end."""

    def __init__(self, start: float, remaining: Callable[[], int],
                 stats: Callable[[], dict[str, float]]) -> None:
        self.start, self.remaining, self.stats = start, remaining, stats
        self.mark = (start, 0, remaining())  # time, jobs sent, backlog
        self.last = stats()

    def close(self, now: float, sent: int, phase: str) -> dict[str, Any]:
        backlog = self.remaining()
        span = now - self.mark[0]
        done = sent - self.mark[1] - (backlog - self.mark[2])
        current = self.stats()
        point = {
            "t": now - self.start,
            "phase": phase,
            "enqueued_per_s": (sent - self.mark[1]) / span,
            "completed_per_s": done / span,
            "backlog": float(backlog),
            **current,
            **_per_job(current, self.last, done),
            # CPU over the window, in cores: the pressure's sessions, every
            # session of the database (theirs included), the whole machine.
            **{f"{key}_cores": (current.get(key, 0) - self.last.get(key, 0)) / span
               for key in _CPU_KEYS},
        }
        self.mark, self.last = (now, sent, backlog), current
        return point


def _per_job(current: dict[str, float], last: dict[str, float], done: int) -> dict[str, float]:
    """The table counters' growth over a window, per job completed in it."""
    return {f"{key}_per_job": (current.get(key, 0) - last.get(key, 0)) / max(done, 1)
            for key in ("buffers", "reads", "index_entries")}


_CPU_KEYS = ("cpu_pressure", "cpu_server", "cpu_machine")


class _ServerCpu:
    """CPU seconds so far (user + system, this machine's server) of the
    sessions of one database, and of those of them that are the pressure's
    (bench/pressure.py), summed over every session seen; and the machine's
    busy CPU seconds."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.seen: dict[int, float] = {}
        self.totals = {"cpu_pressure": 0.0, "cpu_server": 0.0}
        self.machine0 = self._machine()

    @staticmethod
    def _machine() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def sample(self) -> dict[str, float]:
        rows = self.conn.execute(
            "select pid, application_name = %s from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()",
            [pressure.APPLICATION_NAME]).fetchall()
        for pid, is_pressure in rows:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                now = t.user + t.system
                delta = now - self.seen.get(pid, 0.0)
                self.seen[pid] = now
                self.totals["cpu_server"] += delta
                if is_pressure:
                    self.totals["cpu_pressure"] += delta
        return {**self.totals, "cpu_machine": self._machine() - self.machine0}


@contextlib.contextmanager
def _stats_conn(system: System, dsn: str) -> Iterator[Callable[[], dict[str, float]]]:
    if not system.uses_postgres:
        yield dict
        return
    with psycopg.connect(dsn, autocommit=True) as conn:
        cpu = _ServerCpu(conn)
        yield lambda: {**pg.table_stats(conn, system.tables), **cpu.sample()}
