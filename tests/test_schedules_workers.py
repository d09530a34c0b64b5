"""Periodic jobs with several workers, a killed one, tenants and the CLI.

Five concurrent sessions fire over two hundred simulated minutes; a process
is killed (-9) in the middle of a fire; a pgjobs_app tenant meets another
tenant's schedules; a real worker fires a per-second schedule on the real
clock; the CLI's schedule commands, exit codes included."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql as pgsql
from psycopg.rows import dict_row

import pgjobs
from pgjobs.cli import main
from pgjobs.schedules.fire import fire_due
from tests.support import factories
from tests.support.databases import RUN_PREFIX

ROOT = Path(__file__).resolve().parent.parent
UTC = dt.UTC
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
MIN = dt.timedelta(minutes=1)


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, row_factory=dict_row, **kwargs)


def setup_schedules(dsn: str, crons: dict[str, str], start: dt.datetime) -> None:
    with connect(dsn) as conn:
        factories.ensure_type(conn)
        for name, cron in crons.items():
            pgjobs.schedule(conn, name, factories.JOB_TYPE, cron, organization="acme")
            conn.execute(
                "update pgjobs.schedules set next_fire_at = %s where name = %s", (start, name)
            )


def fires(conn: psycopg.Connection[Any]) -> dict[str, list[dt.datetime]]:
    found: dict[str, list[dt.datetime]] = {}
    rows = conn.execute(
        "select f.schedule, f.fire_at from pgjobs.schedule_fires f"
        "  join pgjobs.jobs j on j.id = f.job_id where not f.manual order by f.fire_at"
    ).fetchall()
    for r in rows:
        found.setdefault(r["schedule"], []).append(r["fire_at"])
    return found


@pytest.mark.slow
def test_five_workers_over_two_hundred_minutes_fire_each_tick_exactly_once(dsn: str) -> None:
    crons = {"every-1": "* * * * *", "every-2": "*/2 * * * *", "every-5": "*/5 * * * *"}
    setup_schedules(dsn, crons, T0)
    minutes, workers = 200, 5
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        rng = random.Random(index)
        try:
            with connect(dsn) as conn:
                for minute in range(minutes):
                    barrier.wait(timeout=60)
                    # Each session sees the minute at a different second.
                    jitter = dt.timedelta(seconds=rng.uniform(0, 59))
                    fire_due(conn, now=T0 + minute * MIN + jitter)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors, errors
    with connect(dsn) as conn:
        found = fires(conn)
        jobs = conn.execute("select count(*) as n from pgjobs.jobs").fetchone()["n"]
    expected = {
        "every-1": [T0 + m * MIN for m in range(minutes)],
        "every-2": [T0 + m * MIN for m in range(0, minutes, 2)],
        "every-5": [T0 + m * MIN for m in range(0, minutes, 5)],
    }
    assert found == expected  # no gap, no duplicate
    assert jobs == 200 + 100 + 40


FIRE_AND_HANG = """
import sys, time, datetime as dt, psycopg
from pgjobs.schedules.fire import fire_due
conn = psycopg.connect(sys.argv[1], autocommit=True)
with conn.transaction():
    fired = fire_due(conn, now=dt.datetime.fromisoformat(sys.argv[2]))
    print("fired", len(fired), flush=True)   # the jobs are written, not committed
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_worker_killed_mid_fire_leaves_no_gap_and_no_duplicate(
    dsn: str, wait_for: Callable[..., Any]
) -> None:
    setup_schedules(dsn, {"tick": "* * * * *"}, T0)
    with connect(dsn) as conn:
        fire_due(conn, now=T0)  # tick T0 fired normally
    proc = subprocess.Popen(
        [sys.executable, "-c", FIRE_AND_HANG, dsn, (T0 + MIN).isoformat()],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = ""
        while not line.startswith("fired"):  # (log lines come first)
            line = proc.stdout.readline()
            assert line, "the firing process ended early"
        assert line.split() == ["fired", "1"]  # it fired T0+1min, not committed
        with connect(dsn) as conn:
            # Meanwhile another worker skips the locked schedule: no second job.
            assert fire_due(conn, now=T0 + MIN) == []
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with connect(dsn) as conn:
        # Once the server has dropped the dead session, the tick is still due.
        refired = wait_for(lambda: fire_due(conn, now=T0 + MIN + dt.timedelta(seconds=5)))
        assert [f.fire_at for f in refired] == [T0 + MIN]
        fire_due(conn, now=T0 + 2 * MIN)
        assert fires(conn) == {"tick": [T0, T0 + MIN, T0 + 2 * MIN]}
        assert conn.execute("select count(*) as n from pgjobs.jobs").fetchone()["n"] == 3


@pytest.fixture
def app_role(server_dsn: str) -> Iterator[str]:
    name = f"{RUN_PREFIX}_sched_app"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(
            pgsql.SQL("create role {} login in role pgjobs_app").format(pgsql.Identifier(name))
        )
    yield name
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(pgsql.SQL("drop role if exists {}").format(pgsql.Identifier(name)))


def test_a_tenant_cannot_see_change_or_trigger_another_tenants_schedule(
    dsn: str, app_role: str
) -> None:
    with connect(dsn) as conn:
        factories.ensure_type(conn)
        for org in ("org-A", "org-B"):
            pgjobs.schedule(conn, "report", factories.JOB_TYPE, "0 6 * * *", organization=org)
        pgjobs.schedule(conn, "secret", factories.JOB_TYPE, "0 7 * * *", organization="org-B")
        before = conn.execute("select * from pgjobs.schedules order by 1, 2").fetchall()
    app_dsn = psycopg.conninfo.make_conninfo(dsn, user=app_role)
    with connect(app_dsn) as conn:
        assert conn.execute("select current_user as u").fetchone()["u"] == app_role
        with pytest.raises(pgjobs.AccessDenied), conn.transaction():  # no scope at all
            pgjobs.schedule(conn, "x", factories.JOB_TYPE, "* * * * *")
        assert pgjobs.list_schedules(conn) == []
        with conn.transaction(), pgjobs.tenant(conn, "org-A"):
            names = [(r["organization"], r["name"]) for r in pgjobs.list_schedules(conn)]
            assert names == [("org-A", "report")]
            for table in ("schedules", "schedule_fires", "schedule_status"):
                stmt = pgsql.SQL("select count(*) as n from pgjobs.{} where organization = 'org-B'")
                assert conn.execute(stmt.format(pgsql.Identifier(table))).fetchone()["n"] == 0
            for verb in (
                pgjobs.pause_schedule,
                pgjobs.resume_schedule,
                pgjobs.trigger_schedule,
                pgjobs.unschedule,
            ):
                for kwargs in ({}, {"organization": "org-B"}):
                    with pytest.raises(pgjobs.JobNotFound), conn.transaction():
                        verb(conn, "secret", **kwargs)
            with pytest.raises(pgjobs.AccessDenied), conn.transaction():
                pgjobs.schedule(
                    conn, "secret", factories.JOB_TYPE, "* * * * *", organization="org-B"
                )
            # Plain SQL reaches only its own rows too.
            conn.execute("update pgjobs.schedules set cron = '* * * * *', enabled = false")
            conn.execute("delete from pgjobs.schedule_fires")
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute("select * from pgjobs.schedule_fire('[]'::jsonb)")
            # Its own schedule works as usual.
            job_id = pgjobs.trigger_schedule(conn, "report")
            assert pgjobs.get(conn, job_id)["organization"] == "org-A"
        with conn.transaction(), pgjobs.tenant(conn, "org-B"):
            assert pgjobs.list_schedules(conn)[0]["cron"] == "0 6 * * *"  # untouched
    with connect(dsn) as conn:
        after = conn.execute("select * from pgjobs.schedules order by 1, 2").fetchall()
        b_rows = [r for r in after if r["organization"] == "org-B"]
        assert b_rows == [r for r in before if r["organization"] == "org-B"]
        assert (
            conn.execute(
                "select count(*) as n from pgjobs.jobs where organization = 'org-B'"
            ).fetchone()["n"]
            == 0
        )


@pytest.mark.slow
def test_a_real_worker_fires_a_per_second_schedule_within_a_second(
    dsn: str, wait_for: Callable[..., Any]
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PGJOBS_DSN"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgjobs.cli",
            "worker",
            "--dsn",
            dsn,
            "--processes",
            "1",
            "--queues",
            "ticks",
            "--import",
            "tests.support.schedule_handlers",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with connect(dsn) as conn:
            wait_for(
                lambda: conn.execute(
                    "select count(*) >= 5 as ok from pgjobs.jobs where state = 'completed'"
                ).fetchone()["ok"],
                timeout=60,
            )
            rows = conn.execute(
                "select f.fire_at, j.created_at, s.organization from pgjobs.schedule_fires f"
                "  join pgjobs.jobs j on j.id = f.job_id"
                "  join pgjobs.schedules s on s.name = f.schedule"
                " where f.schedule = 't.every_second' order by f.fire_at"
            ).fetchall()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert len(rows) >= 5 and rows[0]["organization"] is None  # a system schedule
    # Each job was made within a second of its tick, one per tick, none missed.
    assert all(
        dt.timedelta(0) <= r["created_at"] - r["fire_at"] < dt.timedelta(seconds=1) for r in rows
    ), [(r["fire_at"], r["created_at"]) for r in rows]
    ticks = [r["fire_at"] for r in rows]
    assert ticks == [ticks[0] + dt.timedelta(seconds=i) for i in range(len(ticks))]


def cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PGJOBS_DSN"}
    return subprocess.run(
        [sys.executable, "-m", "pgjobs.cli", *args, "--dsn", dsn],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_cli_schedule_commands(dsn: str) -> None:
    with connect(dsn) as conn:
        factories.ensure_type(conn)
    made = cli(
        dsn,
        "schedule",
        "nightly",
        factories.JOB_TYPE,
        "0 6 * * *",
        "--org",
        "acme",
        "--tz",
        "Europe/Berlin",
        "--payload",
        '{"k": 1}',
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["name"] == "nightly"
    bad = cli(dsn, "schedule", "bad", factories.JOB_TYPE, "0 25 * * *", "--org", "acme")
    assert bad.returncode == 2 and "bad cron expression" in bad.stderr
    assert (
        cli(
            dsn,
            "schedule",
            "bad",
            factories.JOB_TYPE,
            "0 6 * * *",
            "--tz",
            "Nowhere/Town",
            "--org",
            "acme",
        ).returncode
        == 2
    )
    listed = cli(dsn, "schedules", "--org", "acme")
    assert (
        listed.returncode == 0 and "nightly" in listed.stdout and "Europe/Berlin" in listed.stdout
    )
    assert cli(dsn, "pause", "nightly", "--org", "acme").returncode == 0
    assert cli(dsn, "resume", "nightly", "--org", "acme").returncode == 0
    triggered = cli(dsn, "trigger", "nightly", "--org", "acme")
    assert triggered.returncode == 0, triggered.stderr
    job_id = json.loads(triggered.stdout)["job_id"]
    assert cli(dsn, "unschedule", "nightly", "--org", "acme").returncode == 0
    assert cli(dsn, "trigger", "nightly", "--org", "acme").returncode == 1  # gone
    with connect(dsn) as conn:
        assert conn.execute("select count(*) as n from pgjobs.schedules").fetchone()["n"] == 0
        assert pgjobs.get(conn, job_id)["payload"] == {"k": 1}
    # The help in process: the commands above ran through the real entry point.
    for command in ("schedules", "schedule", "pause", "resume", "trigger", "unschedule"):
        helped = CliRunner().invoke(main, [command, "--help"])
        assert helped.exit_code == 0 and "Example:" in helped.output
        assert helped.output.count("  --") >= 2  # options, each described
