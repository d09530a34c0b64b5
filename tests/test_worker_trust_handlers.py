"""Workers run only code registered in their own process.

The reproduction: pgjobs_admin (or any role that may write job_types) pointed
a type at a library function that runs a program, and a worker imported and
called it. Now the stored handler is a record: a worker claims only the types
it registered, so such a type's jobs wait, visible in
pgjobs.unserved_job_types and `pgjobs metrics`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog

import pgjobs
from pgjobs import registry
from tests.support import queries, trust_handlers, trust_other_handlers, workers
from tests.support.clients import Logins, as_user, logins

WaitFor = Callable[..., Any]


@pytest.fixture(scope="module")
def roles(server_dsn: str) -> Iterator[Logins]:
    with logins(server_dsn, "wth") as made:
        yield made


def _args(module: str, processes: int = 1) -> list[str]:
    return ["--import", module, "--queues", trust_handlers.QUEUE, "--processes", str(processes),
            "--lease", "5", "--poll", "0.5"]  # fmt: skip


def _write_type(dsn: str, roles: Logins, name: str, handler: str) -> str:
    """Writes a job type as pgjobs_admin; if the privileges refuse that (only
    the owner and workers write job_types), as a pgjobs_worker login, which may
    register types. Returns the role that wrote it."""
    sql = (
        "insert into pgjobs.job_types (name, handler, queue, max_attempts)"
        " values (%s, %s, %s, 1)"
    )
    for role in (roles.admin, roles.worker):
        try:
            with psycopg.connect(as_user(dsn, role), autocommit=True) as conn:
                conn.execute(sql, (name, handler, trust_handlers.QUEUE))
            return role
        except psycopg.errors.InsufficientPrivilege:
            continue
    raise AssertionError("no role could write job_types")


@pytest.mark.slow
def test_a_handler_path_written_into_job_types_is_never_imported(
    dsn: str, roles: Logins, tmp_path: Path, wait_for: WaitFor
) -> None:
    """`click:edit` (a library every worker has) with an "editor" runs any
    program: the old worker imported the stored path and ran it. Now the jobs
    of these types are not claimed by a worker without their handler, the
    marker file never appears, and the types show as unserved."""
    trust_handlers.prepare(dsn)
    marker = tmp_path / "pwned"
    writer = _write_type(dsn, roles, "wt.hostile", "click:edit")
    _write_type(dsn, roles, "wt.shell", "os:system")
    with psycopg.connect(dsn) as conn:
        hostile = pgjobs.enqueue(
            conn, "wt.hostile", {"editor": "touch", "filename": str(marker)}, organization="acme"
        ).id
        shell = pgjobs.enqueue(conn, "wt.shell", {"command": f"touch {marker}"}).id
    with workers.workers(as_user(dsn, roles.worker)) as pool:
        pool.start_args(*_args(trust_handlers.MODULE))
        with psycopg.connect(dsn) as conn:
            later = pgjobs.enqueue(conn, "wt.noop", organization="acme").id
        # The worker has claimed and run what it can: a job enqueued after the others.
        wait_for(lambda: _state(dsn, later) == "completed", timeout=30)
        assert _state(dsn, hostile) == _state(dsn, shell) == "queued"
        unserved = queries.rows(
            as_user(dsn, roles.admin),
            "select job_type, runnable_jobs from pgjobs.unserved_job_types"
            " where runnable_jobs > 0 order by 1",
        )
        assert unserved == [("wt.hostile", 1), ("wt.shell", 1)]
        shown = _metrics(as_user(dsn, roles.admin))["unserved_job_types"]
        waiting = [(t["job_type"], t["runnable_jobs"]) for t in shown if t["runnable_jobs"]]
        assert waiting == unserved
    assert not marker.exists(), f"the handler path written by {writer} was run"
    attempts = queries.rows(
        dsn, "select attempt from pgjobs.jobs where id in (%s, %s)", (hostile, shell)
    )
    assert attempts == [(0,), (0,)]


def _state(dsn: str, job_id: int) -> str:
    return str(queries.scalar(dsn, "select state from pgjobs.jobs where id = %s", (job_id,)))


def _metrics(dsn: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "pgjobs.cli", "metrics", "--dsn", dsn, "--format", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return dict(json.loads(out.stdout))


@pytest.mark.slow
def test_a_worker_without_the_handler_leaves_a_shared_queue_to_the_one_that_has_it(
    dsn: str, roles: Logins, wait_for: WaitFor
) -> None:
    """200 jobs on a queue shared by a healthy worker and one that registered
    other types only: none dead, each completed at its first attempt, all by
    the healthy worker's processes."""
    trust_handlers.prepare(dsn)
    with workers.workers(as_user(dsn, roles.worker)) as pool:
        lacking = pool.start_args(*_args(trust_other_handlers.MODULE, processes=2))
        wait_for(lambda: len(lacking.children()) == 2, timeout=20)
        with psycopg.connect(dsn) as conn:
            pgjobs.enqueue_many(conn, [{"job_type": "wt.noop", "organization": "acme"}] * 200)
        healthy = pool.start_args(*_args(trust_handlers.MODULE, processes=2))
        wait_for(
            lambda: queries.scalar(
                dsn, "select count(*) from pgjobs.jobs where state = 'completed'"
            ) == 200,
            timeout=90,
            message="the healthy worker did not complete the 200 jobs",
        )
        healthy_pids = {str(p) for p in healthy.children()}
        lacking_pids = {str(p) for p in lacking.children()}
    rows = queries.rows(dsn, "select state, attempt, result->>'pid' from pgjobs.jobs")
    assert {(state, attempt) for state, attempt, _ in rows} == {("completed", 1)}
    ran_in = {pid for _, _, pid in rows}
    assert ran_in <= healthy_pids and not ran_in & lacking_pids
    history = queries.scalar(
        dsn, "select count(*) from pgjobs.job_events where to_state in ('retrying', 'dead')"
    )
    assert history == 0


def test_a_registration_that_changes_a_type_is_logged_with_old_and_new_values(
    dsn: str,
) -> None:
    spec = registry.JobType(name="wt.moving", handler="tests.support.handlers:noop")
    moved = registry.JobType(
        name="wt.moving", handler="tests.support.handlers:record", queue="elsewhere",
        max_attempts=9, timeout_seconds=30,
    )  # fmt: skip
    with psycopg.connect(dsn, autocommit=True) as conn:
        with structlog.testing.capture_logs() as first:
            registry.upsert(conn, spec)
            registry.upsert(conn, spec)  # the same settings: nothing to tell
        with structlog.testing.capture_logs() as second:
            registry.upsert(conn, moved)
    assert [e for e in first if e["event"] == "job_type_changed"] == []
    changed = [e for e in second if e["event"] == "job_type_changed"]
    assert changed == [
        {
            "event": "job_type_changed", "log_level": "warning", "job_type": "wt.moving",
            "old_queue": "default", "new_queue": "elsewhere",
            "old_handler": "tests.support.handlers:noop",
            "new_handler": "tests.support.handlers:record",
            "old_max_attempts": 5, "new_max_attempts": 9,
            "old_timeout_seconds": 300, "new_timeout_seconds": 30,
        }
    ]  # fmt: skip
