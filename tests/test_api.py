"""The typed public API: frozen Job and Event records, State returns, explicit
enqueue keywords a type checker sees, and registries as objects."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow

import pgjobs
from pgjobs import registry
from tests.support import factories
from tests.support import handlers as _handlers  # registers the t.* job types

assert _handlers

Conn = psycopg.Connection[DictRow]
ROOT = Path(__file__).resolve().parent.parent


# Handlers for the registry tests: two functions competing for one job type,
# registered only in registries the tests build (never in the default one).
def scoped_a(ctx: pgjobs.JobContext) -> dict[str, str]:
    return {"by": "a"}


def scoped_b(ctx: pgjobs.JobContext) -> dict[str, str]:
    return {"by": "b"}


def _registry(fn: Any) -> registry.Registry:
    types = registry.Registry()
    types.job("t.scoped")(fn)
    return types


# -- records ------------------------------------------------------------------


def test_get_and_list_jobs_return_the_same_frozen_job_record(conn: Conn) -> None:
    job_id = pgjobs.enqueue(conn, "t.noop", {"n": 1}, organization="acme", dedup_key="k").id
    job = pgjobs.get(conn, job_id)
    assert isinstance(job, pgjobs.Job)
    assert (job.id, job.job_type, job.organization, job.payload) == (
        job_id,
        "t.noop",
        "acme",
        {"n": 1},
    )
    assert job.state is pgjobs.State.QUEUED
    assert (job.attempt, job.dedup_key, job.finished_at) == (0, "k", None)
    assert job["state"] == "queued" and job["payload"] == {"n": 1}
    assert job.get("no_such_column", "absent") == "absent"
    with pytest.raises(KeyError):
        job["no_such_column"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.state = pgjobs.State.DEAD  # type: ignore[misc]
    listed = pgjobs.list_jobs(conn, organization="acme")
    assert listed == [job]
    assert dict(listed[0]) == job.as_dict()
    assert list(job.keys())[:3] == ["id", "job_type", "organization"]
    assert {job, *listed} == {job}  # hashable despite the dict inside


def test_history_returns_event_records_with_states(conn: Conn) -> None:
    job_id = factories.make_job(conn, "dead")
    events = pgjobs.history(conn, job_id)
    assert all(isinstance(e, pgjobs.Event) for e in events)
    assert [(e.from_state, e.to_state) for e in events] == [
        (pgjobs.State.QUEUED, pgjobs.State.RUNNING),
        (pgjobs.State.RUNNING, pgjobs.State.DEAD),
    ]
    assert all(isinstance(e.to_state, pgjobs.State) for e in events)
    assert [e["to_state"] for e in events] == ["running", "dead"]
    assert {e.job_id for e in events} == {job_id}


def test_cancel_and_retry_return_the_new_state(conn: Conn) -> None:
    job_id = factories.make_job(conn, "queued")
    canceled = pgjobs.cancel(conn, job_id)
    assert canceled is pgjobs.State.CANCELED
    again = pgjobs.retry(conn, job_id)
    assert again is pgjobs.State.QUEUED
    assert pgjobs.get(conn, job_id).state is pgjobs.State.QUEUED


def test_enqueue_takes_only_the_listed_keywords(conn: Conn) -> None:
    with pytest.raises(TypeError, match="priorty"):
        pgjobs.enqueue(conn, "t.noop", priorty=1)  # type: ignore[call-arg]
    result = pgjobs.enqueue(conn, "t.noop", priority=0, max_attempts=2, timeout=9)
    assert result == pgjobs.EnqueueResult(result.id, False)
    job = pgjobs.get(conn, result.id)
    assert (job.priority, job.max_attempts, job.timeout_seconds) == (0, 2, 9)


# -- registries ---------------------------------------------------------------


def test_run_job_uses_the_registry_it_is_given(conn: Conn) -> None:
    # Enqueued while registry A is current: the type is written with A's handler path.
    with _registry(scoped_a).active():
        first = pgjobs.enqueue(conn, "t.scoped").id
        second = pgjobs.enqueue(conn, "t.scoped").id
    assert "t.scoped" not in registry.default.registered()
    stored = conn.execute("select handler from pgjobs.job_types where name = 't.scoped'")
    assert stored.fetchone() == {"handler": "tests.test_api:scoped_a"}

    ran = pgjobs.testing.run_job(conn, first, registry=_registry(scoped_b))
    assert (ran.state, ran.result) == (pgjobs.State.COMPLETED, {"by": "b"})
    # Without one, the current (default) registry does not know the type, and the
    # stored path is a record, never imported: the attempt fails, counted.
    failed = pgjobs.testing.run_job(conn, second)
    assert (failed.state, failed.attempt, failed.result) == (pgjobs.State.RETRYING, 1, None)
    assert failed.last_error_class == "handler_not_registered"


def test_a_registry_made_current_ends_with_its_block(conn: Conn) -> None:
    scratch = registry.Registry()
    with scratch.active() as current:
        assert registry.current() is current is scratch
    assert registry.current() is registry.default
    with pytest.raises(pgjobs.InvalidJob, match="module-level"):
        scratch.job("t.nested")(lambda ctx: None)
    assert scratch.registered() == {}


_WORKER = """
import sys
from pgjobs.registry import Registry
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.supervisor import run
from tests.test_api import scoped_b

types = Registry()
types.job("t.scoped")(scoped_b)
cfg = WorkerConfig(dsn=sys.argv[1], processes=1, exit_when_idle=True, poll_seconds=0.2)
sys.exit(run(cfg, registry=types))
"""


@pytest.mark.slow
def test_worker_takes_its_handlers_from_the_registry_it_is_given(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, _registry(scoped_a).active():
        job_id = pgjobs.enqueue(conn, "t.scoped").id
    worker = subprocess.run(
        [sys.executable, "-c", _WORKER, dsn],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr[-5000:]
    with psycopg.connect(dsn) as conn:
        job = pgjobs.get(conn, job_id)
        handler = conn.execute("select handler from pgjobs.job_types where name = 't.scoped'")
        assert handler.fetchone() == ("tests.test_api:scoped_b",)  # synced at worker start
    assert (job.state, job.result) == (pgjobs.State.COMPLETED, {"by": "b"})


# -- imports and types --------------------------------------------------------


def test_import_pgjobs_loads_no_worker_module() -> None:
    probe = (
        "import sys, pgjobs; print(sorted(m for m in sys.modules if m.startswith('pgjobs.worker')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


_TYPED = """
import psycopg

import pgjobs
import pgjobs.testing


def use(conn: psycopg.Connection) -> None:
    r = pgjobs.enqueue(conn, "t.noop", {"n": 1}, organization="acme", delay=5)
    i: int = r.id
    d: bool = r.duplicate
    job = pgjobs.get(conn, i)
    s: pgjobs.State = job.state
    rows: list[pgjobs.Job] = pgjobs.list_jobs(conn, state="queued")
    events: list[pgjobs.Event] = pgjobs.history(conn, i)
    after: pgjobs.State = pgjobs.cancel(conn, i)
    again: pgjobs.State = pgjobs.retry(conn, i)
    ran: pgjobs.Job = pgjobs.testing.run_job(conn, i)
"""

_MISTYPED = """
import psycopg

import pgjobs


def use(conn: psycopg.Connection) -> None:
    pgjobs.enqueue(conn, "t.noop", priorty=1)
    name: str = pgjobs.get(conn, 1).id
"""


@pytest.mark.slow
def test_a_users_type_checker_sees_the_typed_api(tmp_path: Path) -> None:
    """Found as an installed package (py.typed), outside the source tree."""
    (tmp_path / "good.py").write_text(textwrap.dedent(_TYPED))
    (tmp_path / "bad.py").write_text(textwrap.dedent(_MISTYPED))
    mypy = Path(sys.executable).parent / "mypy"
    out = subprocess.run(
        [
            str(mypy),
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "cache"),
            "good.py",
            "bad.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # (file, error code) of each error: none in the good snippet, one per mistake.
    errors = [
        (line.split(":")[0], line.rsplit("[", 1)[-1].rstrip("]"))
        for line in out.stdout.splitlines()
        if ": error: " in line
    ]
    assert errors == [("bad.py", "call-arg"), ("bad.py", "assignment")], out.stdout + out.stderr
    assert 'Unexpected keyword argument "priorty"' in out.stdout
