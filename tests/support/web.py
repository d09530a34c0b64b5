"""Shared by the dashboard tests: login roles, a served app, an SSE reader,
a worker process."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from psycopg import sql as pgsql

from tests.support.databases import RUN_PREFIX

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Logins:
    app: str  # a login role in pgjobs_app, as a host application would use
    admin: str  # a login role in pgjobs_admin, for an operator dashboard


@pytest.fixture(scope="session")
def logins(server_dsn: str, template_db: str) -> Iterator[Logins]:
    made = Logins(f"{RUN_PREFIX}_web_app", f"{RUN_PREFIX}_web_admin")
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        for name, group in ((made.app, "pgjobs_app"), (made.admin, "pgjobs_admin")):
            # Each test module that imports this fixture has its own instance
            # of it: the second finds the roles made by the first.
            with contextlib.suppress(psycopg.errors.DuplicateObject):
                conn.execute(
                    pgsql.SQL("create role {} login in role {}").format(
                        pgsql.Identifier(name), pgsql.Identifier(group)
                    )
                )
    yield made
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        for name in (made.app, made.admin):
            with contextlib.suppress(psycopg.Error):
                conn.execute(pgsql.SQL("drop role {}").format(pgsql.Identifier(name)))


def as_user(dsn: str, user: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, user=user)


def test_client(app: Any, **options: Any) -> Any:
    """Starlette's TestClient (which warns, on import, that it prefers httpx2)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    return TestClient(app, **options)


test_client.__test__ = False  # type: ignore[attr-defined]


def header_hooks() -> dict[str, Any]:
    """A host application's authentication, reduced to two request headers."""
    return {
        "organization_for": lambda request: request.headers.get("x-org"),
        "actor_for": lambda request: request.headers.get("x-user"),
    }


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serves ``app`` with uvicorn on a free loopback port; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


class Events:
    """Reads a server-sent event stream in a thread; ``next()`` waits with a deadline."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.items: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.status: int | None = None
        self._ready = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=None))
        self._thread = threading.Thread(target=self._read, args=(url, headers or {}), daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise AssertionError("the event stream did not answer")

    def _read(self, url: str, headers: dict[str, str]) -> None:
        import json

        try:
            with self._client.stream("GET", url, headers=headers) as response:
                self.status = response.status_code
                self._ready.set()
                event = ""
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        self.items.put((event, json.loads(line[5:])))
                    elif line == "":
                        event = ""
        except (httpx.HTTPError, RuntimeError):
            pass
        finally:
            self._ready.set()
            self.items.put(("closed", None))

    def next(self, timeout: float = 15.0) -> tuple[str, Any]:
        try:
            return self.items.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout}s") from None

    def until(self, predicate: Any, timeout: float = 20.0) -> list[tuple[str, Any]]:
        """Every event up to and including the first that satisfies ``predicate``."""
        seen: list[tuple[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching event within {timeout}s; saw {seen}")
            item = self.next(left)
            seen.append(item)
            if predicate(*item):
                return seen

    def close(self) -> None:
        self._client.close()


class WorkerProcess:
    """``pgjobs worker`` serving the web tests' queue, killed whole at the end."""

    def __init__(self, dsn: str) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            "w+", prefix="pgjobs-web-worker-", delete=False
        )
        args = [
            sys.executable,
            "-m",
            "pgjobs.cli",
            "worker",
            "--dsn",
            dsn,
            "--import",
            "tests.support.web_handlers",
            "--queues",
            "web",
            "--processes",
            "1",
            "--poll",
            "0.5",
        ]
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


@contextlib.contextmanager
def worker(dsn: str) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(dsn)
    try:
        yield proc
    finally:
        proc.stop()


A_HEADERS = {"x-org": "org-A", "x-user": "alice"}
B_HEADERS = {"x-org": "org-B", "x-user": "bert"}
