"""Server-sent events: what a stream sends is read through row-level security
under the viewer's scope, never taken from a notification; a viewer never
hears of another organization; a stream outlives a Postgres restart."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.servers import PrivateServer
from pgjobs.migrate import migrate
from pgjobs.web import create_app
from tests.support import factories
from tests.support.web import A_HEADERS, B_HEADERS, Events, header_hooks, serve

pytestmark = pytest.mark.slow


def progress(dsn: str, job_id: int, value: float) -> None:
    """What a worker's ctx.progress does: the row, then the hint."""
    with psycopg.connect(dsn) as conn:
        conn.execute("update pgjobs.jobs set progress = %s where id = %s", (value, job_id))
        conn.execute(
            "select pg_notify('pgjobs_progress', json_build_object('id', id, 'organization',"
            " organization, 'progress', progress, 'state', state)::text)"
            " from pgjobs.jobs where id = %s",
            (job_id,),
        )


def forge(dsn: str, payload: dict[str, Any]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pg_notify('pgjobs_progress', %s)", (json.dumps(payload),))


@pytest.fixture
def jobs(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {
            "a": factories.make_job(conn, "running", organization="org-A"),
            "b": factories.make_job(conn, "running", organization="org-B"),
        }


@pytest.fixture
def url(dsn: str) -> Iterator[str]:
    # A superuser DSN on purpose: the app still runs each read as pgjobs_app.
    with serve(create_app(dsn, **header_hooks())) as base:
        yield base


def test_job_stream_sends_what_the_viewer_reads_then_ends(
    dsn: str, jobs: dict[str, int], url: str
) -> None:
    events = Events(f"{url}/api/jobs/{jobs['a']}/events", A_HEADERS)
    try:
        assert events.status == 200
        kind, first = events.next()
        assert kind == "job" and first["state"] == "running" and first["progress"] is None
        progress(dsn, jobs["a"], 40)
        seen = events.until(lambda k, d: k == "job" and d["progress"] == 40)
        assert all(d["id"] == jobs["a"] for k, d in seen if k == "job")
        with psycopg.connect(dsn) as conn:
            factories.move(conn, jobs["a"], "completed")
        events.until(lambda k, d: k == "job" and d["state"] == "completed")
        assert events.next() == ("end", {})
    finally:
        events.close()


def test_a_forged_notification_is_never_forwarded(dsn: str, jobs: dict[str, int], url: str) -> None:
    events = Events(f"{url}/api/jobs/{jobs['a']}/events", A_HEADERS)
    try:
        events.next()
        forge(dsn, {"id": jobs["a"], "organization": "org-A", "progress": 99, "state": "completed"})
        progress(dsn, jobs["a"], 10)
        seen = events.until(lambda k, d: k == "job" and d["progress"] == 10)
        assert all(d["progress"] != 99 and d["state"] == "running" for _, d in seen)
    finally:
        events.close()


def test_another_organizations_job_has_no_stream(jobs: dict[str, int], url: str) -> None:
    events = Events(f"{url}/api/jobs/{jobs['b']}/events", A_HEADERS)
    try:
        assert events.status == 404
    finally:
        events.close()


def test_the_list_pages_stream_carries_only_the_viewers_organization(
    dsn: str, jobs: dict[str, int], url: str
) -> None:
    events = Events(f"{url}/events", A_HEADERS)
    theirs = Events(f"{url}/events", B_HEADERS)
    try:
        kind, first = events.next()
        assert kind == "changed" and first["last_id"] == jobs["a"]
        theirs.next()
        with psycopg.connect(dsn) as conn:
            b_new = factories.make_job(conn, "queued", organization="org-B")
        theirs.until(lambda k, d: k == "changed" and d["last_id"] == b_new)
        with psycopg.connect(dsn) as conn:
            a_new = factories.make_job(conn, "queued", organization="org-A")
        seen = events.until(lambda k, d: k == "changed" and d["last_id"] == a_new)
        # org-B's newer job never showed in org-A's stream, not even as a count.
        assert all(d["last_id"] in (jobs["a"], a_new) for _, d in seen)
        assert all(d["runnable"] <= 1 and d["running"] <= 1 for _, d in seen)
    finally:
        events.close()
        theirs.close()


@pytest.fixture(scope="module")
def restartable() -> Iterator[PrivateServer]:
    server = PrivateServer(Path(tempfile.mkdtemp(prefix="pgjobs-web-restart-")))
    try:
        server.init()
        server.start()
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            migrate(conn)
        yield server
    finally:
        server.destroy()


def test_a_job_stream_survives_a_postgres_restart(restartable: PrivateServer) -> None:
    dsn = restartable.dsn
    with psycopg.connect(dsn) as conn:
        factories.ensure_type(conn)
        job = factories.make_job(conn, "running", organization="org-A")
    with serve(create_app(dsn, **header_hooks())) as url:
        events = Events(f"{url}/api/jobs/{job}/events", A_HEADERS)
        try:
            events.next()
            progress(dsn, job, 20)
            events.until(lambda k, d: d and d.get("progress") == 20)
            restartable.stop("fast")
            restartable.start()
            # Written after the restart: the stream hears of it by its new LISTEN
            # connection or, failing that, by its poll.
            progress(dsn, job, 70)
            events.until(lambda k, d: k == "job" and d["progress"] == 70, timeout=30)
            with psycopg.connect(dsn) as conn:
                factories.move(conn, job, "completed")
            events.until(lambda k, d: k == "end", timeout=30)
        finally:
            events.close()
