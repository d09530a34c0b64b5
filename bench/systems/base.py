"""What every benchmarked queue provides; the harness (bench/measure.py) only
ever talks to this interface, so a measurement is written once for all."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, ClassVar

import psycopg

from bench import pg

ROOT = Path(__file__).resolve().parents[2]

# Payload of a ping job: the handler sends {seq, start time} to this UDP port.
PING_PORT_ENV = "BENCH_PING_PORT"


class Client:
    """Enqueues from one process; every call is its own transaction."""

    def enqueue(self, ping: int | None = None) -> None:
        """One no-op job, or with ``ping`` a job whose handler reports its start."""
        raise NotImplementedError

    def enqueue_batch(self, count: int) -> None:
        """``count`` no-op jobs in one statement (or the system's bulk call)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class AsyncClient(Client):
    """A client over an asyncio API, driven from synchronous harness code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.aclose())
        self.loop.close()

    async def aclose(self) -> None:
        pass


class System:
    """One queue under test. Subclasses set the class attributes and override
    ``install``, ``client``, ``worker_commands`` and ``remaining_sql``."""

    name: ClassVar[str]
    packages: ClassVar[tuple[str, ...]]  # importable modules it needs
    version_of: ClassVar[str]  # distribution whose version the report prints
    tables: ClassVar[tuple[str, ...]] = ()  # schema.table, for size and dead tuples
    remaining_sql: ClassVar[str] = ""  # jobs not finished yet
    uses_postgres: ClassVar[bool] = True
    config: ClassVar[str] = ""  # how it is set up, for the report
    # At most this many jobs per drain: a system two orders of magnitude slower
    # than the rest would otherwise take most of the session's hour, and its
    # rate is as well measured on fewer (start-up is a small share of it).
    drain_jobs_max: ClassVar[int | None] = None

    def available(self) -> bool:
        return all(importlib.util.find_spec(p) is not None for p in self.packages)

    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(self.version_of)
        except PackageNotFoundError:
            return "?"

    # -- databases ----------------------------------------------------------

    def install(self, dsn: str) -> None:
        """Creates the system's schema in an empty database."""
        raise NotImplementedError

    def prepare_template(self, admin: str, run: int) -> None:
        """Makes the template every fresh database of this run is cloned from."""
        self.admin = admin
        self.template = pg.database_name(f"{self.name}_tpl{run}")
        pg.drop(admin, self.template)
        dsn = pg.create(admin, self.template)
        self.install(dsn)

    def drop_template(self) -> None:
        pg.drop(self.admin, self.template)

    @contextlib.contextmanager
    def fresh(self, label: str) -> Iterator[str]:
        """A database of its own, schema installed, dropped afterwards."""
        with pg.database(self.admin, pg.database_name(f"{self.name}_{label}"), self.template) as d:
            yield d

    # -- running ------------------------------------------------------------

    def client(self, dsn: str) -> Client:
        raise NotImplementedError

    def worker_commands(self, dsn: str, processes: int) -> list[list[str]]:
        """Command lines that together run ``processes`` worker processes."""
        raise NotImplementedError

    @contextlib.contextmanager
    def probe(self, dsn: str) -> Iterator[Callable[[], int]]:
        """A cheap, repeatable count of the jobs not finished yet (one connection).

        It runs every few milliseconds beside the workers it watches, so it may
        not start parallel workers of its own: they would take the CPU the
        measured system needs."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("set max_parallel_workers_per_gather = 0")

            def remaining() -> int:
                row = conn.execute(self.remaining_sql).fetchone()
                assert row is not None
                return int(row[0])

            yield remaining

    def app_command(self, *args: str) -> list[str]:
        """``python -m bench.apps.<name> args``: a peer's worker process."""
        return [sys.executable, "-m", f"bench.apps.{self.name}", *args]


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # BENCH_WORKER_PATH (a checkout holding pgjobs/ and sql/) runs the workers
    # from there: an A/B of two versions in one sitting, on one schema.
    first = (env.get("BENCH_WORKER_PATH"), str(ROOT), env.get("PYTHONPATH"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in first if p)
    env.update(extra or {})
    return env
