"""Handlers and harness for the lifecycle tests (tests/test_lifecycle_*.py).

Workers started by those tests import this module (``--import
tests.lifecycle_handlers``). Every handler leaves evidence in side tables the
tests read, so a test can tell an attempt that ran from one that committed,
and can watch a killed attempt stop:

- ``lc_runs``: one row per attempt that started, written at once on a separate
  autocommit connection (it survives whatever happens to the attempt);
- ``lc_done``: one row per attempt, written through ``ctx.conn``, so it commits
  together with the job's completion or not at all. It has no unique key on
  purpose: a job completed twice would show up as two rows;
- ``lc_once``: like lc_done but keyed by job id, for runs too long to read
  as evidence row by row: a second completion of a job could not commit;
- ``lc_ticks``: a counter a running handler bumps every ~50 ms on a separate
  autocommit connection; once the attempt is stopped the counter must stop.

The handlers find the database in ``PGJOBS_DSN``, which the harness sets for
the workers it starts. The harness half of the module (``Workers``) starts real
worker processes with the CLI and kills whatever is left when a test ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg

import pgjobs

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "lc"
TICK_SECONDS = 0.05

SIDE_TABLES = """
create table if not exists lc_runs (
    job_id bigint not null, attempt int not null, pid int not null,
    at timestamptz not null default clock_timestamp());
create table if not exists lc_done (
    job_id bigint not null, attempt int not null, pid int not null);
create table if not exists lc_ticks (
    job_id bigint primary key, n bigint not null, pid int not null);
create table if not exists lc_once (
    job_id bigint primary key, attempt int not null, pid int not null);
-- Handlers write through ctx.conn, whose transaction runs as a tenant role.
grant select, insert, update, delete on lc_runs, lc_done, lc_ticks, lc_once to public;
"""

# -- the handler side -------------------------------------------------------

_side: psycopg.Connection[Any] | None = None
_side_pid = 0


def side() -> psycopg.Connection[Any]:
    """This process's autocommit connection for evidence that must survive the attempt."""
    global _side, _side_pid
    if _side is None or _side.closed or _side_pid != os.getpid():
        _side = psycopg.connect(os.environ["PGJOBS_DSN"], autocommit=True)
        _side_pid = os.getpid()
    return _side


def mark_started(ctx: pgjobs.JobContext) -> None:
    side().execute(
        "insert into lc_runs (job_id, attempt, pid) values (%s, %s, %s)",
        (ctx.id, ctx.attempt, os.getpid()),
    )


def mark_done(ctx: pgjobs.JobContext) -> None:
    ctx.conn.execute(
        "insert into lc_done (job_id, attempt, pid) values (%s, %s, %s)",
        (ctx.id, ctx.attempt, os.getpid()),
    )


class Ticker:
    """Bumps lc_ticks for one job on a connection of its own."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.conn = psycopg.connect(os.environ["PGJOBS_DSN"], autocommit=True)
        self.next_at = 0.0

    def tick(self) -> None:
        self.conn.execute(
            "insert into lc_ticks (job_id, n, pid) values (%s, 1, %s)"
            " on conflict (job_id) do update set n = lc_ticks.n + 1, pid = excluded.pid",
            (self.job_id, os.getpid()),
        )

    def tick_due(self) -> None:
        now = time.monotonic()
        if now >= self.next_at:
            self.tick()
            self.next_at = now + TICK_SECONDS

    def forever_in_thread(self) -> None:
        def run() -> None:
            while True:
                self.tick()
                time.sleep(TICK_SECONDS)

        threading.Thread(target=run, daemon=True).start()


_RETRY = {"retry_base": 0.05, "retry_cap": 0.2}


@pgjobs.job("lc.work", queue=QUEUE, timeout=60, **_RETRY)
def work(ctx: pgjobs.JobContext, seconds: float = 0.0, n: int = 0) -> dict[str, Any]:
    """Starts, takes ``seconds``, and commits its evidence with its completion."""
    if seconds:
        mark_started(ctx)
        time.sleep(seconds)
    mark_done(ctx)
    return {"n": n, "attempt": ctx.attempt}


@pgjobs.job("lc.fenced", queue=QUEUE, timeout=60, **_RETRY)
def fenced(ctx: pgjobs.JobContext, first_attempt_seconds: float) -> dict[str, Any]:
    """The first attempt writes through ctx.conn and then dawdles (the test stops
    its process meanwhile); later attempts finish at once."""
    mark_done(ctx)
    mark_started(ctx)
    if ctx.attempt == 1:
        deadline = time.monotonic() + first_attempt_seconds
        while time.monotonic() < deadline:
            time.sleep(0.02)
    return {"attempt": ctx.attempt, "pid": os.getpid()}


@pgjobs.job("lc.spin", queue=QUEUE, timeout=2, max_attempts=1)
def spin(ctx: pgjobs.JobContext) -> None:
    """A busy loop that never calls ctx: only a kill stops it."""
    ticker = Ticker(ctx.id)
    mark_started(ctx)
    while True:
        ticker.tick_due()


@pgjobs.job("lc.spin_twice", queue=QUEUE, timeout=2, max_attempts=2, retry_base=0, retry_cap=0)
def spin_twice(ctx: pgjobs.JobContext) -> None:
    """lc.spin with a second attempt allowed."""
    spin(ctx)


@pgjobs.job("lc.snooze", queue=QUEUE, timeout=2, max_attempts=1)
def snooze(ctx: pgjobs.JobContext) -> None:
    """Sleeps in the main thread while another thread keeps writing: a timeout
    that only stopped the main thread would leave the ticks growing."""
    ticker = Ticker(ctx.id)
    ticker.tick()
    ticker.forever_in_thread()
    mark_started(ctx)
    time.sleep(600)


@pgjobs.job("lc.pg_snooze", queue=QUEUE, timeout=2, max_attempts=1)
def pg_snooze(ctx: pgjobs.JobContext) -> None:
    """Blocks in the server, inside the job's own transaction."""
    mark_done(ctx)  # must be rolled back with the attempt
    mark_started(ctx)
    ctx.conn.execute("select pg_sleep(600)")


@pgjobs.job("lc.cooperative", queue=QUEUE, timeout=60, **_RETRY)
def cooperative(ctx: pgjobs.JobContext) -> None:
    """Checks for cancellation between small steps, as a well-behaved job does."""
    ticker = Ticker(ctx.id)
    mark_started(ctx)
    step = 0
    while True:
        ticker.tick()
        step += 1
        ctx.progress(min(step, 100), f"step {step}")
        ctx.raise_if_canceled()
        time.sleep(TICK_SECONDS)


@pgjobs.job("lc.stubborn", queue=QUEUE, timeout=60, **_RETRY)
def stubborn(ctx: pgjobs.JobContext) -> None:
    """Ignores cancellation: never calls ctx while it works."""
    ticker = Ticker(ctx.id)
    mark_started(ctx)
    while True:
        ticker.tick_due()


@pgjobs.job("lc.limited", queue=QUEUE, timeout=60, rate_limit=5, rate_period=10, **_RETRY)
def limited(ctx: pgjobs.JobContext) -> None:
    mark_started(ctx)
    mark_done(ctx)


@pgjobs.job("lc.doomed", queue=QUEUE, timeout=60, **_RETRY)
def doomed(ctx: pgjobs.JobContext) -> None:
    """Can never succeed: dead at its first attempt, whatever max_attempts says."""
    mark_started(ctx)
    raise pgjobs.PermanentError("no such customer")


@pgjobs.job("lc.once", queue=QUEUE, timeout=60, max_attempts=20, **_RETRY)
def once(ctx: pgjobs.JobContext, n: int = 0) -> dict[str, Any]:
    """Writes its evidence only through ctx.conn, keyed by job id: what survives a
    lost connection or a restarted server is exactly what committed."""
    ctx.conn.execute(
        "insert into lc_once (job_id, attempt, pid) values (%s, %s, %s)",
        (ctx.id, ctx.attempt, os.getpid()),
    )
    return {"n": n, "attempt": ctx.attempt}


@pgjobs.job("lc.dedup", queue=QUEUE, dedup_window=60)
def dedup(ctx: pgjobs.JobContext) -> None:
    pass


@pgjobs.job("lc.dedup_no_window", queue=QUEUE, dedup_window=0)
def dedup_no_window(ctx: pgjobs.JobContext) -> None:
    pass


# -- the test side ----------------------------------------------------------


def prepare(dsn: str) -> None:
    """Creates the side tables and the job types in a test's database."""
    from pgjobs import registry

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SIDE_TABLES)
        for spec in registry.registered().values():
            if spec.name.startswith("lc."):
                registry.upsert(conn, spec)


def scalar(dsn: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def rows(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def holds_for(predicate: Callable[[], bool], seconds: float, interval: float = 0.05) -> bool:
    """True if ``predicate`` stays true for ``seconds``: how a test shows that
    something has stopped (a counter no longer grows), as opposed to waiting
    for something to happen, which is what wait_for is for."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(interval)
    return bool(predicate())


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Worker:
    """One ``pgjobs worker`` started through the CLI, in a session of its own
    so that the supervisor and its processes can be signalled together."""

    def __init__(
        self,
        dsn: str,
        *,
        processes: int = 2,
        lease: float = 2.0,
        grace: float = 5.0,
        cancel_grace: float = 0.5,
        poll: float = 0.5,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="pgjobs-lc-worker-", suffix=".log", delete=False
        )
        args = [
            sys.executable,
            "-m",
            "pgjobs.cli",
            "worker",
            "--dsn",
            dsn,
            "--import",
            "tests.lifecycle_handlers",
            "--queues",
            QUEUE,
            "--processes",
            str(processes),
            "--lease",
            str(lease),
            "--grace",
            str(grace),
            "--cancel-grace",
            str(cancel_grace),
            "--poll",
            str(poll),
            *extra,
        ]
        env = dict(os.environ, PGJOBS_DSN=dsn, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def children(self) -> list[int]:
        try:
            return [
                p.pid
                for p in psutil.Process(self.pid).children()
                if p.status() != psutil.STATUS_ZOMBIE
            ]
        except psutil.NoSuchProcess:
            return []

    def signal_all(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        """Leaves nothing running: SIGCONT (a stopped process ignores the rest),
        then SIGKILL to the whole session."""
        if self.proc.poll() is None:
            self.signal_all(signal.SIGCONT)
        self.signal_all(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


class Workers:
    """Starts workers for one test and stops every one of them afterwards."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.started: list[Worker] = []

    def start(self, **options: Any) -> Worker:
        worker = Worker(self.dsn, **options)
        self.started.append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(f"--- worker {w.pid}\n{w.output()}" for w in self.started)

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()


@contextlib.contextmanager
def workers(dsn: str) -> Iterator[Workers]:
    pool = Workers(dsn)
    try:
        yield pool
    except BaseException:
        sys.stderr.write(pool.logs()[-20000:])
        raise
    finally:
        pool.stop_all()


def worker_pid_of(dsn: str, job_id: int) -> int | None:
    """The pid of the worker process holding a running job (jobs.worker is host/pid)."""
    name = scalar(
        dsn, "select worker from pgjobs.jobs where id = %s and state = 'running'", (job_id,)
    )
    return int(name.rsplit("/", 1)[1]) if name else None


def signal_pid(pid: int, signum: int) -> None:
    os.kill(pid, signum)
