"""Observability with a real worker: progress rows and NOTIFY, checkpoints across
a retry, the worker's Prometheus endpoint, retention at worker start, and the
worker's structured logs.

Workers here are ``pgjobs worker`` subprocesses (``--import tests.support.handlers``)
whose output goes to a file: not a terminal, so their logs are JSON lines.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

import pgjobs
from pgjobs import registry, retention
from pgjobs.statements import maintenance, monitoring
from tests.support import factories, handlers, workers
from tests.support.workers import Worker

ROOT = Path(__file__).resolve().parent.parent
WaitFor = Callable[..., Any]


@pytest.fixture
def start_worker(dsn: str) -> Iterator[Callable[..., Worker]]:
    """``pgjobs worker --import tests.support.handlers --processes 1 --poll 0.5 *args``."""
    with workers.workers(dsn) as pool:
        yield lambda *args: pool.start_args(
            "--import", "tests.support.handlers", "--processes", "1", "--poll", "0.5", *args
        )


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test's own database, job types written."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, spec in registry.registered().items():
            if name.startswith("t."):
                registry.upsert(conn, spec)
        yield conn


def _scalar(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


# -- progress and checkpoints ------------------------------------------------


@pytest.mark.slow
def test_progress_10_50_90_is_held_by_the_row_in_turn_and_notified_with_ids_only(
    dsn: str, db: psycopg.Connection[Any], start_worker: Callable[..., Worker], wait_for: WaitFor
) -> None:
    db.execute(handlers.GATE_TABLE)
    with psycopg.connect(dsn, autocommit=True) as listener:
        monitoring.listen_progress(listener)
        job_id = pgjobs.enqueue(
            db, "t.progress_steps", {"steps": [10, 50, 90]}, organization="acme"
        ).id
        start_worker()
        events: list[dict[str, Any]] = []
        for step in (10, 50, 90):
            row = wait_for(
                lambda step=step: db.execute(
                    "select progress, progress_message, state from pgjobs.jobs"
                    " where id = %s and progress = %s",
                    (job_id, step),
                ).fetchone(),
                message=f"the row never held progress {step}",
            )
            assert (float(row[0]), row[1], row[2]) == (step, f"secret message {step}", "running")
            for note in listener.notifies(timeout=10, stop_after=1):
                assert note.channel == "pgjobs_progress"
                events.append(json.loads(note.payload))
            db.execute("insert into obs_gate (job_id, step) values (%s, %s)", (job_id, step))
        wait_for(
            lambda: (
                _scalar(db, "select state from pgjobs.jobs where id = %s", (job_id,)) == "completed"
            )
        )
    # The progress payload: {"id", "organization", "progress", "state"}, never the message text.
    assert events == [
        {"id": job_id, "organization": "acme", "progress": step, "state": "running"}
        for step in (10, 50, 90)
    ]


@pytest.mark.slow
def test_retried_job_starts_from_its_last_checkpoint(
    db: psycopg.Connection[Any], start_worker: Callable[..., Worker], wait_for: WaitFor
) -> None:
    job_id = pgjobs.enqueue(db, "t.resume", {"total": 6, "fail_after": 3}).id
    start_worker()
    wait_for(
        lambda: (
            _scalar(db, "select state from pgjobs.jobs where id = %s", (job_id,)) == "completed"
        ),
        timeout=15,
    )
    result, checkpoint, attempt = db.execute(
        "select result, checkpoint, attempt from pgjobs.jobs where id = %s", (job_id,)
    ).fetchone()  # type: ignore[misc]
    # The first attempt did steps 0-2 and failed; the second saw {"done": 3} and
    # did only what was left.
    assert result == {"attempt": 2, "last_checkpoint": {"done": 3}, "ran": [3, 4, 5]}
    assert checkpoint == {"done": 6}
    assert attempt == 2
    outcomes = db.execute(
        "select attempt, to_state, error_class from pgjobs.job_events"
        " where job_id = %s and from_state = 'running' order by attempt",
        (job_id,),
    ).fetchall()
    assert outcomes == [(1, "retrying", "TransientError"), (2, "completed", None)]


# -- the worker's Prometheus endpoint ----------------------------------------


def _scrape(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _expected_from_json(
    data: dict[str, Any],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples the JSON says the exposition must carry (stable figures only)."""
    expected = {}

    def put(name: str, labels: dict[str, Any], value: Any) -> None:
        if value is not None:
            key = tuple(sorted((k, str(v) if v is not None else "") for k, v in labels.items()))
            expected[(f"pgjobs_{name}", key)] = float(value)

    for row in data["job_counts"]:
        labels = {k: row[k] for k in ("organization", "job_type", "state")}
        put("jobs", labels, row["jobs"])
    for row in data["processing_times"]:
        for stat in ("avg_ms", "p50_ms", "p95_ms"):
            put(f"processing_{stat}", {"job_type": row["job_type"]}, row[stat])
    for row in data["failure_rates"]:
        put("attempts", {"job_type": row["job_type"]}, row["attempts"])
        put("failures", {"job_type": row["job_type"]}, row["failures"])
        put("failure_rate", {"job_type": row["job_type"]}, row["rate"])
    put("workers", {}, data["workers"]["workers"])
    put("running_jobs", {}, data["workers"]["running_jobs"])
    return expected


@pytest.mark.slow
def test_metrics_port_serves_prometheus_text_matching_metrics_json(
    dsn: str, db: psycopg.Connection[Any], start_worker: Callable[..., Worker], wait_for: WaitFor
) -> None:
    ids = [pgjobs.enqueue(db, "t.noop", {}, organization="acme").id for _ in range(3)]
    ids.append(pgjobs.enqueue(db, "t.single_attempt", organization="globex").id)
    worker = start_worker("--metrics-port", "0")
    serving = wait_for(lambda: worker.event("metrics_serving"), message="no metrics_serving")
    assert serving["host"] == "127.0.0.1"
    port = serving["port"]
    wait_for(
        lambda: (
            _scalar(
                db,
                "select count(*) from pgjobs.jobs where id = any(%s) and finished_at is not null",
                (ids,),
            )
            == 4
        )
    )

    status, text = _scrape(port)
    assert status == 200, text
    cli = subprocess.run(
        [sys.executable, "-m", "pgjobs.cli", "metrics", "--format", "json", "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert cli.returncode == 0, cli.stderr
    data = json.loads(cli.stdout)
    served = _samples(text)
    expected = _expected_from_json(data)
    assert (
        expected[
            (
                "pgjobs_jobs",
                (("job_type", "t.noop"), ("organization", "acme"), ("state", "completed")),
            )
        ]
        == 3
    )
    assert expected[("pgjobs_failures", (("job_type", "t.single_attempt"),))] == 1
    assert expected[("pgjobs_workers", ())] == 1
    assert {k: served.get(k) for k in expected} == expected
    # Postgres health is there too (its figures move between two reads).
    names = {name for name, _ in served}
    for key in data["postgres"]:
        assert f"pgjobs_postgres_{key}" in names

    # A dropped session costs one scrape at most, never the worker.
    db.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity"
        " where application_name like 'pgjobs exporter %%' and datname = current_database()"
    )
    wait_for(lambda: _scrape(port)[0] == 200, message="the exporter did not reconnect")
    assert worker.proc.poll() is None
    assert _scrape(port)[0] == 200


def test_metrics_port_in_use_is_a_usage_error(dsn: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pgjobs.cli",
                "worker",
                "--dsn",
                dsn,
                "--processes",
                "1",
                "--metrics-port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    assert run.returncode == 2, run.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in run.stderr


# -- retention by the worker --------------------------------------------------


def _age(conn: psycopg.Connection[Any], job_id: int, days: int) -> None:
    conn.execute(
        "update pgjobs.jobs set created_at = now() - make_interval(days => %(d)s),"
        " finished_at = case when finished_at is not null"
        "                    then now() - make_interval(days => %(d)s) end"
        " where id = %(id)s",
        {"d": days, "id": job_id},
    )


def _jobs_and_events(conn: psycopg.Connection[Any], ids: list[int]) -> tuple[set[int], set[int]]:
    jobs = {r[0] for r in conn.execute("select id from pgjobs.jobs where id = any(%s)", (ids,))}
    events = {
        r[0]
        for r in conn.execute(
            "select distinct job_id from pgjobs.job_events where job_id = any(%s)", (ids,)
        )
    }
    return jobs, events


@pytest.mark.slow
def test_prune_after_prunes_old_finished_jobs_at_start_one_worker_at_a_time(
    dsn: str, db: psycopg.Connection[Any], start_worker: Callable[..., Worker], wait_for: WaitFor
) -> None:
    old = [factories.make_job(db, state) for state in ("completed", "dead", "canceled")]
    recent = factories.make_job(db, "completed")
    old_but_active = factories.make_job(db, "queued", job_type="t.other_queue")  # not served
    for job_id in [*old, old_but_active]:
        _age(db, job_id, 40)
    everything = [*old, recent, old_but_active]
    assert _jobs_and_events(db, everything)[1] >= set(old)

    # Another worker's pruner has the turn: this one leaves the rows alone.
    with psycopg.connect(dsn, autocommit=True) as other:
        assert maintenance.lease_take(other, duty="prune", holder="other/1", seconds=600)
        first = start_worker("--prune-after", "30d")
        skipped = wait_for(lambda: first.event("prune_skipped"), message="no prune_skipped")
        assert skipped["worker"]
        assert _jobs_and_events(db, everything)[0] == set(everything)
        maintenance.lease_release(other, duties=["prune"], holder="other/1")
    first.stop()

    second = start_worker("--prune-after", "30d")
    done = wait_for(lambda: second.event("prune_done"), message="no prune_done")
    assert done["pruned"] == 3
    jobs, events = _jobs_and_events(db, everything)
    assert jobs == {recent, old_but_active}
    assert not events & set(old)


def test_prune_exclusive_gives_way_to_a_pruner_already_running(dsn: str) -> None:
    with (
        psycopg.connect(dsn, autocommit=True) as first,
        psycopg.connect(dsn, autocommit=True) as second,
    ):
        assert maintenance.lease_take(first, duty="prune", holder="first/1", seconds=600)
        assert retention.prune_exclusive(second, 86400, holder="second/2") is None
        maintenance.lease_release(first, duties=["prune"], holder="first/1")
        assert retention.prune_exclusive(second, 86400, holder="second/2") == 0
        # The turn went with the run: the first pruner can take it again.
        assert maintenance.lease_take(first, duty="prune", holder="first/1", seconds=600)


# -- structured logs ----------------------------------------------------------

JOB_KEYS = {"job_id", "job_type", "organization", "attempt", "worker"}


@pytest.mark.slow
def test_worker_logs_are_json_lines_whose_job_events_carry_the_job_keys(
    db: psycopg.Connection[Any], start_worker: Callable[..., Worker], wait_for: WaitFor
) -> None:
    ok = pgjobs.enqueue(db, "t.noop", {}, organization="acme").id
    failed = pgjobs.enqueue(db, "t.single_attempt", organization="globex").id
    chatty = pgjobs.enqueue(db, "t.chatty", organization="initech").id
    worker = start_worker("--log-level", "debug")
    names = {"job_completed": ok, "job_failed": failed, "handler_event": chatty}
    wait_for(
        lambda: {e.get("event") for e in worker.events()} >= set(names),
        message="missing worker events",
    )
    events = worker.events()  # every line parsed as JSON, or this fails
    orgs = {ok: "acme", failed: "globex", chatty: "initech"}
    types = {ok: "t.noop", failed: "t.single_attempt", chatty: "t.chatty"}
    for name, job_id in names.items():
        event = next(e for e in events if e["event"] == name and e.get("job_id") == job_id)
        assert event.keys() >= JOB_KEYS, event
        assert event["job_type"] == types[job_id]
        assert event["organization"] == orgs[job_id]
        assert event["attempt"] == 1
        assert event["worker"].rsplit("/", 1)[1].isdigit()
        assert {"level", "timestamp"} <= event.keys()
    for event in events:  # every event of this run that names a job
        if "job_id" in event:
            assert event.keys() >= JOB_KEYS, event
