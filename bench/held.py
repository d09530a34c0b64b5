"""Completions per second with the queue held at a depth, and what the
server's sessions wait on meanwhile.

The shape of the independent harness that found the collapse past the core
count: N worker processes, jobs of a millisecond, a feeder topping
the queue up to ``depth`` so workers never run dry. A sampler reads
pg_stat_activity every few milliseconds and tallies the wait events of the
active sessions (``CPU`` when none), and, less often, which statements hold
what the waiting sessions wait for.

``python -m bench.held --processes 4,16,64 --seconds 30`` prints one line per
process count: completions per second, CPU per job (worker processes, server
sessions, and the server's by session kind: the word after "pgjobs" in its
application_name), for pgjobs the jobs per claim and per completion write, and
the top wait events; ``BENCH_DSN`` picks the server (it needs about 2
connections per worker process). Where the server loads pg_stat_statements
(created in ``BENCH_DSN``'s database; ``pg_stat_statements.track = all`` and
``track_planning = on`` to see the statements inside functions and their
plans) the slowest statements follow, with calls and plans per job.

With ``--variants`` each checkout runs on its own schema too (a template
database its own package installs), so a change of the SQL is measured with
the Python that goes with it; ``--one-schema`` runs them all on this
checkout's schema instead.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import psycopg
import psycopg.conninfo

from bench import measure, pg, variants
from bench.systems import ALL, System

_WAITS = """
select coalesce(wait_event_type, 'CPU'), coalesce(wait_event, 'running'), count(*)
  from pg_stat_activity
 where datname = current_database() and state = 'active' and pid <> pg_backend_pid()
 group by 1, 2
"""
# What the sessions that block others are doing: the first words of their statement.
_HOLDERS = """
select left(regexp_replace(h.query, '\\s+', ' ', 'g'), 60), count(*)
  from pg_stat_activity w
  cross join lateral unnest(pg_blocking_pids(w.pid)) as b(pid)
  join pg_stat_activity h on h.pid = b.pid
 where w.datname = current_database() and w.wait_event_type = 'Lock'
 group by 1
"""


# pgjobs only: how many jobs a claim and a completion write carried over the
# window. A claim stamps its jobs' started_at with its statement's now(), a
# write their finished_at with its own; jobs sharing a stamp (and a worker)
# came in one claim or left in one write. Read once, after the window.
_PGJOBS_BATCHES = """
select count(*)::float8 / greatest(count(distinct (worker, started_at)), 1),
       count(*)::float8 / greatest(count(distinct (worker, finished_at)), 1)
  from pgjobs.jobs
 where state = 'completed' and finished_at >= %s and finished_at < %s
"""


def db_now(dsn: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("select clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def batches(system: System, dsn: str, since: Any, until: Any) -> dict[str, float]:
    """Jobs per claim and per completion write (pgjobs only; {} otherwise)."""
    if system.name != "pgjobs":
        return {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(_PGJOBS_BATCHES, (since, until)).fetchone()
    assert row is not None
    return {"jobs_per_claim": round(row[0], 1), "jobs_per_write": round(row[1], 1)}


# How often the feeder counts and tops up: a count reads the whole queue, so
# polling faster takes CPU from the system measured.
_POLL_SECONDS = 0.05


class Sampler(threading.Thread):
    """Tallies wait events (every ``every`` s) and lock holders (every tenth sample)."""

    def __init__(self, dsn: str, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.every = every
        self.stopped = threading.Event()
        self.waits: collections.Counter[str] = collections.Counter()
        self.holders: collections.Counter[str] = collections.Counter()
        self.samples = 0

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stopped.wait(self.every):
                for kind, event, n in conn.execute(_WAITS).fetchall():
                    self.waits[f"{kind}:{event}"] += n
                if self.samples % 10 == 0:
                    for query, n in conn.execute(_HOLDERS).fetchall():
                        self.holders[query] += n
                self.samples += 1

    def report(self) -> dict[str, Any]:
        """Average sessions per wait event, and the holders' shares."""
        n = max(self.samples, 1)
        return {
            "waits": {k: round(v / n, 2) for k, v in self.waits.most_common(8)},
            "holders": dict(self.holders.most_common(5)),
        }


@contextlib.contextmanager
def sampling(dsn: str) -> Iterator[Sampler]:
    s = Sampler(dsn)
    s.start()
    try:
        yield s
    finally:
        s.stopped.set()
        s.join()


def process_cpu(procs: list[psutil.Process]) -> float:
    """CPU seconds (user + system) used so far by ``procs``; one gone is 0."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def cpu_seconds(w: measure.Workers, dsn: str) -> tuple[float, float]:
    """CPU seconds used so far by the worker processes and by the server
    sessions of this database (both on this machine): a cost per job that
    holds whatever share of the machine others take."""
    # A peer's process is its own job process: counted once.
    found = [psutil.Process(p.pid) for p in w.procs] + w.job_processes()
    workers = list({p.pid: p for p in found}.values())
    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = [r[0] for r in conn.execute(
            "select pid from pg_stat_activity where datname = current_database()"
            " and pid <> pg_backend_pid()").fetchall()]
    backends = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            backends.append(psutil.Process(pid))
    return process_cpu(workers), process_cpu(backends)


def _session_kind(application_name: str) -> str:
    words = application_name.split()
    return words[1] if len(words) > 1 and words[0] == "pgjobs" else application_name or "other"


def session_cpu(dsn: str) -> dict[str, float]:
    """CPU seconds so far of this database's server sessions, by kind."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select pid, application_name from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()").fetchall()
    found: dict[str, float] = collections.defaultdict(float)
    for pid, name in rows:
        with contextlib.suppress(psutil.Error):
            found[_session_kind(name)] += process_cpu([psutil.Process(pid)])
    return found


_STATEMENTS = """
select left(regexp_replace(s.query, '\\s+', ' ', 'g'), 60), s.calls, s.plans,
       s.total_exec_time + s.total_plan_time, s.total_plan_time, s.shared_blks_hit
  from pg_stat_statements s join pg_database d on d.oid = s.dbid
 where d.datname = %s
 order by 4 desc limit %s
"""


class Statements:
    """pg_stat_statements over the window, where the server has it."""

    def __init__(self, admin: str, dsn: str, top: int = 8) -> None:
        self.admin = admin
        self.top = top
        self.dbname = psycopg.conninfo.conninfo_to_dict(dsn).get("dbname")
        self.on = True
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute("select pg_stat_statements_reset()")
        except psycopg.Error:
            self.on = False

    def report(self, done: int) -> dict[str, Any]:
        """The slowest statements: calls and plans per job, ms (exec + plan) per
        call, µs of planning and buffers read (hits) per job."""
        if not self.on:
            return {}
        with psycopg.connect(self.admin, autocommit=True) as conn:
            rows = conn.execute(_STATEMENTS, [self.dbname, self.top]).fetchall()
        n = max(done, 1)
        return {"statements": [
            {"query": q, "calls_per_job": round(calls / n, 4), "plans_per_job": round(plans / n, 4),
             "ms_per_call": round(ms / max(calls, 1), 3),
             "plan_us_per_job": round(plan_ms / n * 1000, 1),
             "buffers_per_job": round(hits / n, 1)}
            for q, calls, plans, ms, plan_ms, hits in rows]}


def held(system: System, dsn: str, processes: int, depth: int, seconds: float,
         warmup: float = 5.0, statements_top: int = 8) -> dict[str, Any]:
    """Completions/s over ``seconds`` after ``warmup``, the queue kept near ``depth``."""
    client = system.client(dsn)
    client.job_type = "bench.sleep1ms"  # type: ignore[attr-defined]
    try:
        with system.probe(dsn) as remaining, measure.workers(system, dsn, processes) as w:
            sent = 0

            def top_up() -> int:
                nonlocal sent
                left = remaining()
                while left < depth:
                    n = min(depth - left, 500)
                    client.enqueue_batch(n)
                    sent += n
                    left += n
                return left

            stop = time.monotonic() + warmup
            while time.monotonic() < stop:
                top_up()
                w.check()
                time.sleep(_POLL_SECONDS)
            with sampling(dsn) as sampler:
                cpu0, by_session0 = cpu_seconds(w, dsn), session_cpu(dsn)
                statements = Statements(pg.admin_dsn(), dsn, statements_top)
                since = db_now(dsn)
                t0, sent0, left0 = time.monotonic(), sent, top_up()
                while time.monotonic() - t0 < seconds:
                    time.sleep(_POLL_SECONDS)
                    left = top_up()
                w.check()
                span = time.monotonic() - t0
                cpu1, by_session1 = cpu_seconds(w, dsn), session_cpu(dsn)
                until = db_now(dsn)
            done = (sent - sent0) - (left - left0)
            return {"processes": processes, "completed_per_s": done / span,
                    "worker_cpu_us_per_job": (cpu1[0] - cpu0[0]) / max(done, 1) * 1e6,
                    "server_cpu_us_per_job": (cpu1[1] - cpu0[1]) / max(done, 1) * 1e6,
                    "server_cpu_us_per_job_by_session": {
                        k: round((v - by_session0.get(k, 0.0)) / max(done, 1) * 1e6, 1)
                        for k, v in sorted(by_session1.items(), key=lambda kv: -kv[1])},
                    **batches(system, dsn, since, until), **sampler.report(),
                    **statements.report(done)}
    finally:
        client.close()


def variant_templates(system: System, admin: str,
                      pairs: list[list[str]]) -> dict[str, str]:
    """label -> a template database with that checkout's schema."""
    templates = {}
    for label, path in pairs:
        name = pg.database_name(f"{system.name}_tpl_{label}")
        pg.drop(admin, name)
        variants.install(os.path.abspath(path), pg.create(admin, name), system.name)
        templates[label] = name
    return templates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.held", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", default="4,16,64")
    parser.add_argument("--depth", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repeats")
    parser.add_argument("--system", default="pgjobs")
    parser.add_argument("--variants", default="",
                        help="label=checkout,... : each checkout's workers and schema"
                             " in turn (A/B)")
    parser.add_argument("--one-schema", action="store_true",
                        help="every variant on this checkout's schema")
    parser.add_argument("--statements", type=int, default=8,
                        help="how many of the slowest statements to show")
    args = parser.parse_args(argv)
    system = ALL[args.system]()
    admin = pg.admin_dsn()
    pairs = [v.split("=", 1) for v in args.variants.split(",") if v] or [["", ""]]
    system.prepare_template(admin, 0)
    own = {} if args.one_schema or not args.variants else variant_templates(system, admin, pairs)
    shared = system.template
    try:
        for _ in range(args.rounds):
            for procs in (int(p) for p in args.processes.split(",")):
                for label, path in pairs:
                    os.environ["BENCH_WORKER_PATH"] = path
                    system.template = own.get(label, shared)
                    with system.fresh(f"held{procs}") as dsn:
                        out = held(system, dsn, procs, args.depth, args.seconds,
                                   statements_top=args.statements)
                    print(json.dumps({"variant": label, **out}), flush=True)
    finally:
        system.template = shared
        system.drop_template()
        for name in own.values():
            pg.drop(admin, name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
