"""``python -m bench.hosts [--quick | --tiny] [--runs N]``: workers on several
hosts add up. pgjobs workers run on 1, 2 and 3 hosts (network namespaces on
this machine, bench/netns.py, each reaching a private Postgres over its own
veth link and address), the same number of processes on each, and drain the
same pre-enqueued no-op jobs; per layout: the aggregate drain rate, Postgres'
CPU (all its processes) as a share of the machine's cores, the machine's busy
share, and the server's sessions by wait event (sampled from
pg_stat_activity). A fourth layout, one host running as many processes as
three hosts do, tells what hosts cost from what more processes cost.

All hosts share this machine's cores: the figure shows that the protocol adds
up across hosts (claims, leases and completions of separate hosts do not
contend), not that more hosts bring more capacity."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench import measure, netns, settings
from bench.systems.pgjobs import PgJobs

PER_HOST = 2  # worker processes on each host
# (label, hosts, processes per host)
LAYOUTS: list[tuple[str, int, int]] = [
    ("1 host", 1, PER_HOST),
    ("2 hosts", 2, PER_HOST),
    ("3 hosts", 3, PER_HOST),
    ("1 host, as many processes as 3", 1, 3 * PER_HOST),
]
# The private server as durable as the shared one the other figures run on
# (bench/servers.py turns both off for speed).
SERVER_SETTINGS = {"fsync": "on", "full_page_writes": "on"}
SAMPLE_SECONDS = 0.1

Progress = Callable[[str], None]


class PgJobsOnHosts(PgJobs):
    """pgjobs with one ``pgjobs worker`` per host in use, each connecting over
    its host's link."""

    def __init__(self, hosts: Sequence[netns.Host], server: Any) -> None:
        self.hosts = list(hosts)
        self.server = server
        self.using = self.hosts[:1]

    def worker_commands(self, dsn: str, processes: int) -> list[list[str]]:
        dbname = str(conninfo_to_dict(dsn)["dbname"])
        commands = []
        for host in self.using:
            there = host.dsn(self.server, dbname)
            commands += [host.command(c) for c in super().worker_commands(there, processes)]
        return commands


class ServerWatch:
    """While entered: CPU time of every process of the server and the wait
    events of its active sessions, sampled every SAMPLE_SECONDS in a thread."""

    def __init__(self, postmaster: int, dsn: str) -> None:
        self.postmaster = postmaster
        self.dsn = dsn
        self.samples = 0
        self.waits: Counter[str] = Counter()
        self.cpu_first: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ServerWatch:
        self.started = time.monotonic()
        self.machine = psutil.cpu_times()
        self._sample_cpu(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample_cpu()
        self.elapsed = time.monotonic() - self.started
        after = psutil.cpu_times()
        idle = (after.idle + after.iowait) - (self.machine.idle + self.machine.iowait)
        self.machine_busy = 1 - idle / max(sum(after) - sum(self.machine), 1e-9)

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.wait(SAMPLE_SECONDS):
                self._sample_cpu()
                rows = conn.execute(
                    "select coalesce(wait_event_type || ':' || wait_event, 'CPU'), count(*)"
                    "  from pg_stat_activity where state = 'active'"
                    # The hosts' sessions: not this one nor the harness's probe.
                    "   and client_addr is distinct from '127.0.0.1'"
                    "   and backend_type = 'client backend'"
                    " group by 1"
                ).fetchall()
                self.waits.update({name: n for name, n in rows})
                self.samples += 1

    def _sample_cpu(self, first: bool = False) -> None:
        """A backend born after the first sample counts from zero; one that
        ends between samples loses its last SAMPLE_SECONDS at most."""
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.postmaster)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    self.cpu_last[proc.pid] = t.user + t.system
                    if first:
                        self.cpu_first[proc.pid] = self.cpu_last[proc.pid]

    def figures(self) -> dict[str, Any]:
        cpu = sum(last - self.cpu_first.get(pid, 0.0) for pid, last in self.cpu_last.items())
        per = max(self.samples, 1)
        return {
            "postgres_cpu_s": cpu,
            "postgres_cpu": cpu / (self.elapsed * (os.cpu_count() or 1)),
            "machine_busy": self.machine_busy,
            "active": sum(self.waits.values()) / per,
            "lock_waits": sum(n for k, n in self.waits.items() if k.startswith("Lock:")) / per,
            "lwlock_waits": sum(n for k, n in self.waits.items() if k.startswith("LWLock:")) / per,
            "top_waits": {k: n / per for k, n in self.waits.most_common(4)},
        }


def _postmaster(server: Any) -> int:
    return int((server.pgdata / "postmaster.pid").read_text().split()[0])


def run(sizes: settings.Sizes, runs: int | None = None,
        progress: Progress = print) -> dict[str, Any]:
    """Every layout once per run, interleaved; a dict for the report (with
    ``skipped`` when namespaces cannot be made here)."""
    result: dict[str, Any] = {
        "jobs": sizes.hosts_jobs, "per_host": PER_HOST, "cores": os.cpu_count(),
        "layouts": {label: [] for label, _, _ in LAYOUTS}, "errors": [], "skipped": None,
    }
    try:
        with netns.hosts(max(h for _, h, _ in LAYOUTS)) as hosts, \
                netns.server_for(hosts, SERVER_SETTINGS) as server:
            system = PgJobsOnHosts(hosts, server)
            system.prepare_template(server.dsn, 0)
            try:
                for r in range(runs or sizes.runs):
                    progress(f"hosts: run {r + 1}")
                    for layout in LAYOUTS:
                        _measure(system, server, sizes, layout, result, progress)
            finally:
                system.drop_template()
    except netns.NetnsError as exc:
        result["skipped"] = str(exc)
        progress(f"hosts: skipped: {exc}")
    except Exception as exc:  # the server or template: the session's other figures stand
        result["errors"].append(f"setup: {exc}")
        progress(f"hosts: FAILED: {exc}")
    return result


def _measure(system: PgJobsOnHosts, server: Any, sizes: settings.Sizes,
             layout: tuple[str, int, int], result: dict[str, Any], progress: Progress) -> None:
    label, count, per_host = layout
    system.using = system.hosts[:count]
    try:
        with system.fresh(f"hosts{count}x{per_host}") as dsn:
            watch = ServerWatch(_postmaster(server), dsn)
            d = measure.drain(system, dsn, sizes.hosts_jobs, per_host, sizes.worker_timeout,
                              watch=watch)
    except Exception as exc:
        result["errors"].append(f"{label}: {exc}")
        progress(f"  FAILED {label}: {exc}")
        return
    point = {"total": d["total"], "steady": d["steady"], **watch.figures()}
    # What Postgres spends per job, the figure the machine's other load moves least.
    point["jobs_per_pg_cpu_s"] = sizes.hosts_jobs / max(point["postgres_cpu_s"], 1e-6)
    result["layouts"][label].append(point)
    progress(f"  {label} ({count * per_host} processes): {d['steady']:,.0f} jobs/s "
             f"({d['total']:,.0f} with start-up); Postgres CPU {point['postgres_cpu']:.0%} "
             f"of {os.cpu_count()} cores, machine {point['machine_busy']:.0%}; "
             f"active {point['active']:.1f}, waiting on Lock {point['lock_waits']:.2f}, "
             f"LWLock {point['lwlock_waits']:.2f}")


@contextlib.contextmanager
def _terminated_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the namespaces are removed on either."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hosts", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the quick mode's sizes")
    parser.add_argument("--tiny", action="store_true", help="the smoke test's sizes")
    parser.add_argument("--runs", type=int, default=None, help="runs per layout (default 3)")
    args = parser.parse_args(argv)
    sizes = settings.TINY if args.tiny else settings.QUICK if args.quick else settings.FULL
    with _terminated_as_interrupt():
        result = run(sizes, args.runs, progress=lambda s: print(s, flush=True))
    from bench import report

    print("\n".join(report.hosts_section(result)))
    return 1 if result["skipped"] or result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
