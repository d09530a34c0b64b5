"""The worker-process harness: real ``pgjobs worker`` processes started through
the CLI, each in a session of its own so that the supervisor and its
processes can be signalled together, and all killed when the test ends."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg

from tests.support import queries

ROOT = Path(__file__).resolve().parent.parent.parent
LIFECYCLE = "tests.support.lifecycle_handlers"

# What the lifecycle handlers write their evidence into (see that module).
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


def prepare(dsn: str) -> None:
    """Creates the lifecycle side tables and job types in a test's database."""
    from pgjobs import registry
    from tests.support import lifecycle_handlers  # noqa: F401 - registers the lc.* types

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SIDE_TABLES)
        for spec in registry.registered().values():
            if spec.name.startswith("lc."):
                registry.upsert(conn, spec)


class Worker:
    """``pgjobs worker --dsn DSN *args``, its output kept in a temporary file;
    ``wrap`` turns the command line into another (run it on a host of
    bench/netns.py) that execs it, so the pid is still the worker's."""

    def __init__(
        self, dsn: str, *args: str, wrap: Callable[[list[str]], list[str]] | None = None
    ) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="pgjobs-test-worker-", suffix=".log", delete=False
        )
        command = [sys.executable, "-m", "pgjobs.cli", "worker", "--dsn", dsn, *args]
        self.proc = subprocess.Popen(
            wrap(command) if wrap else command,
            cwd=ROOT,
            env=dict(os.environ, PGJOBS_DSN=dsn, PYTHONUNBUFFERED="1"),
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

    def events(self) -> list[dict[str, Any]]:
        """Every complete log line, each of which must hold JSON objects: two
        processes writing at the same instant can leave two on one line."""
        lines = self.output().splitlines(keepends=True)
        return [e for line in lines if line.endswith("\n") for e in json_objects(line.strip())]

    def event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events() if e.get("event") == name), None)

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


def lifecycle_args(
    *,
    processes: int = 2,
    lease: float = 2.0,
    grace: float = 5.0,
    cancel_grace: float = 0.5,
    poll: float = 0.5,
    queues: str | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """A worker of the lifecycle handlers' queue (or ``queues``), with short
    leases and graces."""
    from tests.support.lifecycle_handlers import QUEUE

    return [
        "--import", LIFECYCLE, "--queues", queues or QUEUE, "--processes", str(processes),
        "--lease", str(lease), "--grace", str(grace), "--cancel-grace", str(cancel_grace),
        "--poll", str(poll), *extra,
    ]  # fmt: skip


class Workers:
    """Starts workers for one test and stops every one of them afterwards."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.started: list[Worker] = []

    def start(self, **options: Any) -> Worker:
        """A lifecycle worker (see :func:`lifecycle_args` for the options)."""
        return self.start_args(*lifecycle_args(**options))

    def start_on(self, wrap: Callable[[list[str]], list[str]], dsn: str, **options: Any) -> Worker:
        """A lifecycle worker run through ``wrap`` (on a host), connecting to ``dsn``."""
        worker = Worker(dsn, *lifecycle_args(**options), wrap=wrap)
        self.started.append(worker)
        return worker

    def start_args(self, *args: str) -> Worker:
        worker = Worker(self.dsn, *args)
        self.started.append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(f"--- worker {w.pid}\n{w.output()}" for w in self.started)

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()


@contextlib.contextmanager
def workers(dsn: str) -> Iterator[Workers]:
    """A pool for one test; on failure its workers' logs go to stderr."""
    pool = Workers(dsn)
    try:
        yield pool
    except BaseException:
        sys.stderr.write(pool.logs()[-20000:])
        raise
    finally:
        pool.stop_all()


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def worker_pid_of(dsn: str, job_id: int) -> int | None:
    """The pid of the worker process holding a running job (jobs.worker is host/pid)."""
    name = queries.scalar(
        dsn, "select worker from pgjobs.jobs where id = %s and state = 'running'", (job_id,)
    )
    return int(name.rsplit("/", 1)[1]) if name else None


def signal_pid(pid: int, signum: int) -> None:
    os.kill(pid, signum)


def json_objects(line: str) -> list[dict[str, Any]]:
    """The JSON objects written back to back on ``line`` (one, almost always)."""
    found, at, decoder = [], 0, json.JSONDecoder()
    while at < len(line):
        value, at = decoder.raw_decode(line, at)
        found.append(value)
    return found
