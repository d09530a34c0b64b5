"""Finished work leaves the hot path (0060): pgjobs.jobs is partitioned by state,
finished jobs by period of finished_at, and history (0090) by period of `at`;
partitions are made ahead by the workers and dropped whole by retention, and
every public name keeps working across partitions (dedup, dependencies,
row-level security, history)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs import retention, sql
from pgjobs.migrate import migrate
from pgjobs.statements import Completed, Lease, run
from pgjobs.statements.outcomes import complete_many
from pgjobs.worker.beacon import Beacon, Leases
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.slots import Slots
from tests.support import factories, queries, workers
from tests.test_security import Roles, as_user, roles  # noqa: F401 - fixtures

DAY = dt.timedelta(days=1)


def _partition_of(conn: psycopg.Connection[Any], job_id: int) -> str:
    row = conn.execute(
        "select tableoid::regclass::text from pgjobs.jobs where id = %s", (job_id,)
    ).fetchone()
    assert row is not None, f"no job {job_id}"
    return str(row[0])


def _finish_at(conn: psycopg.Connection[Any], state: str, at: dt.datetime, **kw: Any) -> int:
    """A job that reached ``state`` (finished) at ``at``, in that period's
    partition, its history written then too (as a completion at ``at`` would)."""
    job_id = factories.make_job(conn, state, **kw)
    conn.execute("update pgjobs.jobs set finished_at = %s where id = %s", (at, job_id))
    _history_at(conn, job_id, at)
    return job_id


def _history_at(conn: psycopg.Connection[Any], job_id: int, at: dt.datetime) -> None:
    """Moves the job's history so far to ``at`` (its ids, so its order, stay)."""
    conn.execute("update pgjobs.job_events set at = %s where job_id = %s", (at, job_id))


def _events_partition_of(conn: psycopg.Connection[Any], job_id: int) -> set[str]:
    return {
        str(r[0])
        for r in conn.execute(
            "select tableoid::regclass::text from pgjobs.job_events where job_id = %s", (job_id,)
        )
    }


def _events_name(name: str) -> str:
    """The partition of history of the period whose finished jobs' is ``name``."""
    return "job_events_" + name.removeprefix("jobs_finished_")


def _bounds(conn: psycopg.Connection[Any], at: dt.datetime) -> tuple[str, Any, Any]:
    """The name and bounds of the partition of finished jobs for ``at``."""
    row = conn.execute(
        "select * from pgjobs.finished_partition("
        "  %s, (select period from pgjobs.partition_settings))",
        (at,),
    ).fetchone()
    assert row is not None
    return str(row[0]), row[1], row[2]


def _installed_long_ago(conn: psycopg.Connection[Any]) -> None:
    """Drops the (empty) history partitions, which hold everything finished or
    written before the day the schema was installed: partitions of earlier
    periods can be made, as in a database installed long before them."""
    conn.execute("drop table pgjobs.jobs_finished_history, pgjobs.job_events_history")


def _exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("select to_regclass(%s) is not null", (f"pgjobs.{name}",)).fetchone()
    return bool(row and row[0])


def test_workers_make_partitions_ahead_as_the_owner(dsn: str, roles: Roles) -> None:  # noqa: F811
    with psycopg.connect(as_user(dsn, roles.worker), autocommit=True) as conn:
        made = conn.execute("select pgjobs.partitions_ensure()").fetchone()
        again = conn.execute("select pgjobs.partitions_ensure()").fetchone()
        now = conn.execute("select now()").fetchone()
    assert made == (8,)  # this period and three ahead, of finished jobs and of history
    assert again == (0,)
    assert now is not None
    with psycopg.connect(dsn) as conn:
        names = [_bounds(conn, now[0] + k * DAY)[0] for k in range(4)]
        for parent, expected in (
            ("jobs_finished", names),
            ("job_events", [_events_name(n) for n in names]),
        ):
            rows = conn.execute(
                "select c.relname, c.relowner::regrole::text, c.relrowsecurity,"
                "       c.relforcerowsecurity, c.relacl,"
                "       pg_get_expr(c.relpartbound, c.oid)"
                "  from pg_inherits i join pg_class c on c.oid = i.inhrelid"
                " where i.inhparent = %s::regclass"
                "   and c.relname !~ '_(default|history)$'"
                " order by c.relname",
                (f"pgjobs.{parent}",),
            ).fetchall()
            assert [r[0] for r in rows] == expected
            # Made by the owner, no grants, row-level security forced with no policy.
            assert {r[1:5] for r in rows} == {("pgjobs_owner", True, True, None)}
            bounds = [r[5] for r in rows]
        # The same periods for both.
        assert bounds == [
            conn.execute(
                "select pg_get_expr(relpartbound, oid) from pg_class where relname = %s", (n,)
            ).fetchone()[0]  # type: ignore[index]
            for n in names
        ]


def test_a_job_finished_just_before_a_boundary_stays_in_its_period(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("select pgjobs.partitions_ensure()")
        name, lo, hi = _bounds(conn, dt.datetime.now(dt.UTC))
        before = _finish_at(conn, "completed", hi - dt.timedelta(microseconds=1))
        at = _finish_at(conn, "dead", hi)
        first = _finish_at(conn, "canceled", lo)
        unfinished = factories.make_job(conn, "running")
        assert _partition_of(conn, before) == f"pgjobs.{name}"
        assert _partition_of(conn, first) == f"pgjobs.{name}"
        assert _partition_of(conn, at) == f"pgjobs.{_bounds(conn, hi)[0]}"
        assert _partition_of(conn, unfinished) == "pgjobs.jobs_active"
        # A time no partition was made for goes to the default one, one before
        # the schema was installed to the history: nothing fails.
        later = _finish_at(conn, "completed", hi + 30 * DAY)
        assert _partition_of(conn, later) == "pgjobs.jobs_finished_default"
        old = _finish_at(conn, "completed", lo - 30 * DAY)
        assert _partition_of(conn, old) == "pgjobs.jobs_finished_history"
        # pgjobs.get finds each, wherever it lives.
        for job_id, state in ((before, "completed"), (at, "dead"), (later, "completed")):
            assert pgjobs.get(conn, job_id).state == state


def test_retention_drops_whole_old_partitions_and_deletes_the_straddling_rows(dsn: str) -> None:
    older_than = 5 * 86400.0
    with psycopg.connect(dsn) as conn:
        now = conn.execute("select now()").fetchone()[0]  # type: ignore[index]
        cutoff = now - dt.timedelta(seconds=older_than)
        _installed_long_ago(conn)
        conn.execute("select pgjobs.partitions_ensure(%s)", (cutoff - 3 * DAY,))
        conn.execute("select pgjobs.partitions_ensure()")
        gone_whole = [_finish_at(conn, "completed", cutoff - 2 * DAY) for _ in range(3)]
        whole_partition = _bounds(conn, cutoff - 2 * DAY)[0]
        straddling = _bounds(conn, cutoff)[0]
        gone_row = _finish_at(conn, "dead", cutoff - dt.timedelta(minutes=1))
        kept_row = _finish_at(conn, "completed", cutoff + dt.timedelta(minutes=1))
        kept_new = _finish_at(conn, "completed", now)
        unfinished = factories.make_job(conn, "queued")
        conn.commit()
        assert _partition_of(conn, gone_whole[0]) == f"pgjobs.{whole_partition}"
        assert _events_partition_of(conn, gone_whole[0]) == {
            f"pgjobs.{_events_name(whole_partition)}"
        }

    with psycopg.connect(dsn, autocommit=True) as conn:
        assert retention.prune(conn, older_than) == 4  # three whole, one row
    with psycopg.connect(dsn) as conn:
        assert not _exists(conn, whole_partition)  # dropped, not emptied row by row
        assert not _exists(conn, _events_name(whole_partition))  # its history too
        assert _exists(conn, straddling)
        assert _exists(conn, _events_name(straddling))
        left = [r[0] for r in conn.execute("select id from pgjobs.jobs order by id")]
        assert left == sorted([kept_row, kept_new, unfinished])
        history = {r[0] for r in conn.execute("select distinct job_id from pgjobs.job_events")}
        assert history == {kept_row, kept_new}  # a queued job has no transition yet
        assert not set(gone_whole) & history and gone_row not in history


def test_dedup_and_dependencies_reach_parents_in_older_partitions(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        factories.ensure_type(conn)
        conn.execute("update pgjobs.job_types set dedup_window_seconds = 0")
        _installed_long_ago(conn)
        conn.execute("select pgjobs.partitions_ensure(now() - interval '3 days')")
        old = dt.datetime.now(dt.UTC) - 2 * DAY
        done = _finish_at(conn, "completed", old)
        dead = _finish_at(conn, "dead", old)
        assert _partition_of(conn, done).startswith("pgjobs.jobs_finished_2")

        runs = factories.insert_job(conn, depends_on=[done])
        born_canceled = factories.insert_job(conn, depends_on=[done, dead])
        assert factories.state_of(conn, runs) == "queued"
        row = conn.execute(
            "select state, canceled_by, last_error, finished_at is not null,"
            "       tableoid::regclass::text from pgjobs.jobs where id = %s",
            (born_canceled,),
        ).fetchone()
        assert row is not None
        assert row[:4] == ("canceled", "dependency", f"dependency {dead} ended dead", True)
        assert row[4].startswith("pgjobs.jobs_finished_")

        # A key whose job finished (in an old partition) and whose window passed
        # is free again; a live one still makes a duplicate.
        key = conn.execute(
            "insert into pgjobs.jobs (job_type, dedup_key) values (%s, 'k') returning id",
            (factories.JOB_TYPE,),
        ).fetchone()
        assert key is not None
        factories.move(conn, key[0], "running")
        factories.move(conn, key[0], "completed")
        conn.execute("update pgjobs.jobs set finished_at = %s where id = %s", (old, key[0]))
        again = conn.execute(
            "insert into pgjobs.jobs (job_type, dedup_key) values (%s, 'k') returning id",
            (factories.JOB_TYPE,),
        ).fetchone()
        assert again is not None and again[0] != key[0]
        duplicate = conn.execute(
            "insert into pgjobs.jobs (job_type, dedup_key) values (%s, 'k') returning id",
            (factories.JOB_TYPE,),
        ).fetchone()
        assert duplicate is None


def test_a_tenant_sees_its_finished_jobs_only_through_pgjobs_jobs(
    dsn: str,
    roles: Roles,  # noqa: F811
) -> None:
    with psycopg.connect(dsn) as conn:
        made = conn.execute("select pgjobs.partitions_ensure(now() + interval '20 days')")
        assert made.fetchone() == (8,)
        later = dt.datetime.now(dt.UTC) + 21 * DAY
        name = _bounds(conn, later)[0]
        mine = _finish_at(conn, "completed", later, organization="acme")
        theirs = _finish_at(conn, "completed", later, organization="globex")
        assert _partition_of(conn, mine) == _partition_of(conn, theirs) == f"pgjobs.{name}"
        conn.commit()

    with psycopg.connect(as_user(dsn, roles.app)) as conn:
        with pgjobs.tenant(conn, "acme"):
            seen = [
                r[0] for r in conn.execute("select id from pgjobs.jobs where state = 'completed'")
            ]
            assert seen == [mine]
            assert pgjobs.get(conn, mine).state == "completed"
        partitions = (
            "jobs_active",
            "jobs_finished",
            "jobs_finished_default",
            "jobs_finished_history",
        )
        jobs_writes = (
            "insert into pgjobs.{} (id, job_type, queue, priority, max_attempts,"
            "  timeout_seconds, state, organization)"
            " values (1, 'x', 'q', 0, 1, 0, 'queued', 'acme')",
            "update pgjobs.{} set payload = '{{}}'",
        )
        events_writes = (  # history's partitions alike (0090)
            "insert into pgjobs.{} (job_id, job_type, attempt, to_state, organization)"
            " values (1, 'x', 1, 'queued', 'acme')",
            "update pgjobs.{} set message = 'x'",
        )
        refused = [(t, jobs_writes) for t in (name, *partitions)] + [
            (t, events_writes)
            for t in (_events_name(name), "job_events_default", "job_events_history")
        ]
        for table, writes in refused:
            for statement in ("select * from pgjobs.{}", *writes, "delete from pgjobs.{}"):
                with (
                    pgjobs.tenant(conn, "acme"),
                    pytest.raises(psycopg.errors.InsufficientPrivilege),
                ):
                    conn.execute(statement.format(table))
                conn.rollback()


_HOLD_IN_TRANSACTION = """
import sys, time, psycopg
conn = psycopg.connect(sys.argv[1])
row = conn.execute(sys.argv[2]).fetchone()
print("done", row[0], flush=True)
time.sleep(600)
"""


def _killed_midway(dsn: str, statement: str) -> None:
    """Runs ``statement`` in a process of its own, kills it -9 before it commits,
    and waits until the server has ended its session (and its locks)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_IN_TRANSACTION, dsn, statement],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("done"), line
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    queries.wait_for(
        lambda: (
            queries.rows(
                dsn, "select count(*) from pg_stat_activity where query = %s", (statement,)
            )
            == [(0,)]
        ),
        timeout=15,
        message="the killed process's session did not end",
    )


@pytest.mark.slow
def test_a_process_killed_while_making_or_dropping_partitions_leaves_them_whole(
    dsn: str,
) -> None:
    make = "select pgjobs.partitions_ensure(now() + interval '40 days')"
    _killed_midway(dsn, make)
    with psycopg.connect(dsn, autocommit=True) as conn:
        name = _bounds(conn, dt.datetime.now(dt.UTC) + 40 * DAY)[0]
        assert not _exists(conn, name)  # rolled back with its session
        assert not _exists(conn, _events_name(name))
        assert conn.execute(make).fetchone() == (8,)  # the next turn makes them
        assert _exists(conn, name) and _exists(conn, _events_name(name))

        _installed_long_ago(conn)
        conn.execute("select pgjobs.partitions_ensure(now() - interval '20 days')")
        with conn.transaction():
            old = [
                _finish_at(conn, "completed", dt.datetime.now(dt.UTC) - 19 * DAY) for _ in range(3)
            ]
            # Still running, its history begun in the period dropped: it stays.
            kept = [factories.make_job(conn, "running")]
            _history_at(conn, kept[0], dt.datetime.now(dt.UTC) - 19 * DAY)
        dropped = _partition_of(conn, old[0]).removeprefix("pgjobs.")
        kept_events = 1  # queued -> running

    _killed_midway(dsn, "select pgjobs.partition_drop_oldest(now() - interval '10 days')")
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Nothing lost: jobs, history and both partitions are all there.
        assert _exists(conn, dropped) and _exists(conn, _events_name(dropped))
        assert conn.execute(
            "select count(*) from pgjobs.jobs where id = any(%s)", (old,)
        ).fetchone() == (3,)
        assert conn.execute(
            "select count(distinct job_id) from pgjobs.job_events where job_id = any(%s)", (old,)
        ).fetchone() == (3,)
        assert conn.execute(
            "select count(*) from pgjobs.job_events where job_id = any(%s)", (kept,)
        ).fetchone() == (kept_events,)
        assert retention.prune(conn, 10 * 86400) == 3
        assert not _exists(conn, dropped) and not _exists(conn, _events_name(dropped))
        # The kept job's history moved out of the dropped period, whole.
        assert conn.execute(
            "select count(*) from pgjobs.job_events where job_id = any(%s)", (kept,)
        ).fetchone() == (kept_events,)


_CANCEL_EVERY_JOB = """
import sys, psycopg, pgjobs
dsn, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
errors = {}
with psycopg.connect(dsn, autocommit=True) as conn:
    for job_id in range(last, first - 1, -1):
        try:
            pgjobs.cancel(conn, job_id)
        except pgjobs.InvalidTransition:
            pass  # finished first: what the application expects
        except psycopg.Error as exc:
            errors[exc.sqlstate] = errors.get(exc.sqlstate, 0) + 1
print(errors, flush=True)
"""


@pytest.mark.slow
def test_cancels_racing_a_draining_worker_raise_nothing_unexpected(dsn: str) -> None:
    """The worker completes (moves rows to jobs_finished) while another process
    cancels the same jobs: every cancel either cancels or says the job
    finished; no serialization error reaches the application, and every job
    ends finished."""
    workers.prepare(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "insert into pgjobs.jobs (job_type) select 'lc.work' from generate_series(1, 3000)"
                " returning id"
            )
        ]
    with workers.workers(dsn) as pool:
        pool.start(processes=2)
        canceler = subprocess.run(
            [sys.executable, "-c", _CANCEL_EVERY_JOB, dsn, str(min(ids)), str(max(ids))],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        assert canceler.stdout.strip() == "{}", canceler.stdout + canceler.stderr
        queries.wait_for(
            lambda: (
                queries.rows(
                    dsn, "select count(*) from pgjobs.jobs where not pgjobs.is_finished(state)"
                )
                == [(0,)]
            ),
            timeout=120,
            message="jobs were left unfinished",
        )
    counts = dict(queries.rows(dsn, "select state, count(*) from pgjobs.jobs group by state"))
    assert set(counts) <= {"completed", "canceled"} and sum(counts.values()) == 3000


def test_the_migration_moves_every_row_of_an_existing_database(empty_dsn: str) -> None:
    """A database from before 0060, with jobs in every state, history and dedup
    keys: after the migration every row is where it was (same ids, states and
    history), each in its partition, and enqueue, cancel and retry go on."""
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        for step in sql.migrations():
            if step.version >= 60:
                break
            with conn.transaction():
                conn.execute(step.sql.encode())
                if step.version > 0:
                    conn.execute(
                        sql.query("migration_record"), {"version": step.version, "name": step.name}
                    )
        ids = {state: factories.make_job(conn, state) for state in factories.PATHS}
        ids["waiting"] = factories.make_job(conn, "waiting")
        conn.execute(
            "update pgjobs.jobs set finished_at = now() - interval '2 days' where id = %s",
            (ids["canceled"],),
        )
        keyed = conn.execute(
            "insert into pgjobs.jobs (job_type, dedup_key) values (%s, 'k') returning id",
            (factories.JOB_TYPE,),
        ).fetchone()
        assert keyed is not None
        before = conn.execute(
            "select id, state, attempt, finished_at from pgjobs.jobs order by id"
        ).fetchall()
        events = conn.execute("select count(*) from pgjobs.job_events").fetchone()

        assert [a.split("_")[0] for a in migrate(conn)] == [
            f"{m.version:04d}" for m in sql.migrations() if m.version >= 60
        ]
        after = conn.execute(
            "select id, state, attempt, finished_at from pgjobs.jobs order by id"
        ).fetchall()
        assert after == before
        assert conn.execute("select count(*) from pgjobs.job_events").fetchone() == events
        homes = dict(
            conn.execute("select state, tableoid::regclass::text from pgjobs.jobs").fetchall()
        )
        assert homes["queued"] == homes["running"] == homes["waiting"] == "pgjobs.jobs_active"
        # Finished before the day of the migration: the history; on it, the default.
        assert homes["canceled"] == "pgjobs.jobs_finished_history"
        assert homes["completed"] == homes["dead"] == "pgjobs.jobs_finished_default"
        # The sequence goes on past the old ids; a duplicate key is still one.
        new = factories.insert_job(conn)
        assert new > max(r[0] for r in before)
        assert (
            conn.execute(
                "insert into pgjobs.jobs (job_type, dedup_key) values (%s, 'k') returning id",
                (factories.JOB_TYPE,),
            ).fetchone()
            is None
        )
        assert pgjobs.cancel(conn, ids["queued"]) == "canceled"
        assert pgjobs.retry(conn, ids["dead"]) == "queued"
        assert factories.state_of(conn, ids["dead"]) == "queued"
        assert _partition_of(conn, ids["dead"]) == "pgjobs.jobs_active"


def test_retry_moves_a_job_back_to_jobs_active_as_itself(dsn: str) -> None:
    """A job canceled before it ever ran, retried: the same row moves back (same
    id, one row, no second dedup key), not a new job taken by the insert
    trigger, and its history shows both transitions."""
    with psycopg.connect(dsn) as conn:
        factories.ensure_type(conn)
        row = conn.execute(
            "insert into pgjobs.jobs (job_type, dedup_key) values (%s, 'once') returning id",
            (factories.JOB_TYPE,),
        ).fetchone()
        assert row is not None
        job_id = row[0]
        assert pgjobs.cancel(conn, job_id) == "canceled"
        assert _partition_of(conn, job_id).startswith("pgjobs.jobs_finished_")
        assert pgjobs.retry(conn, job_id) == "queued"
        assert _partition_of(conn, job_id) == "pgjobs.jobs_active"
        assert conn.execute("select count(*), max(id) from pgjobs.jobs").fetchone() == (1, job_id)
        assert conn.execute(
            "select job_id, active from pgjobs.dedup_keys where dedup_key = 'once'"
        ).fetchall() == [(job_id, True)]
        assert conn.execute(
            "select from_state, to_state from pgjobs.job_events where job_id = %s order by id",
            (job_id,),
        ).fetchall() == [("queued", "canceled"), ("canceled", "queued")]


# -- history (0090) ---------------------------------------------------------------


def _history(conn: psycopg.Connection[Any], job_id: int) -> list[tuple[Any, ...]]:
    return [(e.id, e.from_state, e.to_state, e.attempt, e.at) for e in pgjobs.history(conn, job_id)]


def test_retention_keeps_the_whole_history_of_a_job_enqueued_long_ago_and_finished_recently(
    dsn: str,
) -> None:
    """The period's history partition goes whole with its finished jobs; the
    events in it of jobs kept (finished after the cut-off, or unfinished)
    move out first, with their ids, and go once their job goes."""
    older_than = 5 * 86400.0
    with psycopg.connect(dsn) as conn:
        now = conn.execute("select now()").fetchone()[0]  # type: ignore[index]
        cutoff = now - dt.timedelta(seconds=older_than)
        long_ago = cutoff - 2 * DAY
        _installed_long_ago(conn)
        conn.execute("select pgjobs.partitions_ensure(%s)", (cutoff - 3 * DAY,))
        conn.execute("select pgjobs.partitions_ensure()")
        pruned = _finish_at(conn, "completed", long_ago)
        # Enqueued and first run long ago, failed, then retried and completed
        # recently: its first events are in the period dropped.
        late = factories.make_job(conn, "retrying")
        _history_at(conn, late, long_ago)
        factories.move(conn, late, "running")
        factories.move(conn, late, "completed")
        # Running since long ago.
        running = factories.make_job(conn, "running")
        _history_at(conn, running, long_ago)
        conn.commit()
        period = _events_name(_bounds(conn, long_ago)[0])
        assert f"pgjobs.{period}" in _events_partition_of(conn, late)
        before = {job: _history(conn, job) for job in (late, running)}
        assert [h[1:3] for h in before[late]] == [
            ("queued", "running"),
            ("running", "retrying"),
            ("retrying", "running"),
            ("running", "completed"),
        ]

    with psycopg.connect(dsn, autocommit=True) as conn:
        assert retention.prune(conn, older_than) == 1
        assert not _exists(conn, period)  # dropped whole
        assert conn.execute(
            "select count(*) from pgjobs.job_events where job_id = %s", (pruned,)
        ).fetchone() == (0,)
        # Every event of the kept jobs, the same ids in the same order; the old
        # ones now in the default partition.
        for job, events in before.items():
            assert _history(conn, job) == events
            assert [h[0] for h in events] == sorted(h[0] for h in events)
        assert "pgjobs.job_events_default" in _events_partition_of(conn, late)

        # The late job goes too (its own period dropped a day later): its old
        # events go from the default partition with it.
        conn.execute("update pgjobs.jobs set finished_at = %s where id = %s", (long_ago, late))
        conn.execute(
            "update pgjobs.job_events set at = %s where job_id = %s and at > %s",
            (long_ago + DAY / 2, late, long_ago),
        )
        conn.execute("select pgjobs.partitions_ensure(%s)", (long_ago,))
        assert retention.prune(conn, older_than) == 1
        assert _history(conn, late) == []
        assert _history(conn, running) == before[running]
        # New history still goes to this period's partition, ids still rising.
        factories.move(conn, running, "completed")
        last = _history(conn, running)[-1]
        assert last[1:3] == ("running", "completed") and last[0] > before[running][-1][0]
        assert f"pgjobs.{_bounds(conn, now)[0]}".replace(
            "jobs_finished_", "job_events_"
        ) in _events_partition_of(conn, running)


def test_history_written_with_no_partition_for_its_time_lands_in_the_default(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        job = factories.make_job(conn, "completed")  # no partition made yet
        assert _events_partition_of(conn, job) == {"pgjobs.job_events_default"}
        conn.rollback()
        assert conn.execute("select pgjobs.partitions_ensure()").fetchone() == (8,)
        job = factories.make_job(conn, "completed")
        name = _events_name(_bounds(conn, dt.datetime.now(dt.UTC))[0])
        assert _events_partition_of(conn, job) == {f"pgjobs.{name}"}


def test_a_tenant_sees_its_own_history_only_through_the_public_names(
    dsn: str,
    roles: Roles,  # noqa: F811
) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("select pgjobs.partitions_ensure()")
        mine = factories.make_job(conn, "dead", organization="acme")
        theirs = factories.make_job(conn, "dead", organization="globex")
        name = _events_name(_bounds(conn, dt.datetime.now(dt.UTC))[0])
        assert _events_partition_of(conn, mine) == _events_partition_of(conn, theirs)
        conn.commit()

    with psycopg.connect(as_user(dsn, roles.app)) as conn:
        with pgjobs.tenant(conn, "acme"):
            assert [e.to_state for e in pgjobs.history(conn, mine)] == ["running", "dead"]
            assert pgjobs.history(conn, theirs) == []
            seen = {r[0] for r in conn.execute("select distinct job_id from pgjobs.job_events")}
            assert seen == {mine}
            rates = conn.execute("select dead from pgjobs.failure_rates").fetchall()
            assert rates == [(1,)]
        for statement in (f"select * from pgjobs.{name}", f"delete from pgjobs.{name}"):
            with pgjobs.tenant(conn, "acme"), pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()


def test_the_migration_moves_every_history_row_in_order(empty_dsn: str) -> None:
    """A database from before 0090 with history: after the migration every
    event is there with its id and columns, the old ones in
    job_events_history, and new events get larger ids."""
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        for step in sql.migrations():
            if step.version >= 90:
                break
            with conn.transaction():
                conn.execute(step.sql.encode())
                if step.version > 0:
                    conn.execute(
                        sql.query("migration_record"), {"version": step.version, "name": step.name}
                    )
        ids = [factories.make_job(conn, state) for state in factories.PATHS for _ in range(3)]
        conn.execute(
            "update pgjobs.job_events set at = at - interval '3 days' where job_id = any(%s)",
            (ids[::2],),
        )
        columns = (
            "id, job_id, organization, job_type, attempt, from_state, to_state, worker,"
            " error_class, message, traceback, duration_ms, at, actor"
        )
        before = conn.execute(f"select {columns} from pgjobs.job_events order by id").fetchall()
        assert len(before) > 20

        assert [a.split("_")[0] for a in migrate(conn)] == [
            f"{m.version:04d}" for m in sql.migrations() if m.version >= 90
        ]
        after = conn.execute(f"select {columns} from pgjobs.job_events order by id").fetchall()
        assert after == before
        homes = dict(
            conn.execute(
                "select distinct job_id, tableoid::regclass::text from pgjobs.job_events"
                " where job_id = any(%s)",
                (ids[::2],),
            ).fetchall()
        )
        assert set(homes.values()) == {"pgjobs.job_events_history"}
        # Today's finished jobs are in jobs_finished_default, and today's
        # history in job_events_history (up to the start of tomorrow): the
        # next three periods' partitions of each are made, not today's.
        assert conn.execute("select pgjobs.partitions_ensure()").fetchone() == (6,)
        new = factories.make_job(conn, "completed")
        assert _events_partition_of(conn, new) == {"pgjobs.job_events_history"}
        new_ids = [e.id for e in pgjobs.history(conn, new)]
        assert min(new_ids) > max(r[0] for r in before)
        assert [e.id for e in pgjobs.history(conn, ids[0])] == [
            r[0] for r in before if r[1] == ids[0]
        ]

        # Retention past the end of job_events_history drops it whole; every
        # job is still there, so every event moves out, the same ids in order.
        before = conn.execute(f"select {columns} from pgjobs.job_events order by id").fetchall()
        while conn.execute(
            "select pgjobs.partition_drop_oldest(now() + interval '2 days')"
        ).fetchone() != (None,):
            pass
        assert not _exists(conn, "job_events_history")
        after = conn.execute(f"select {columns} from pgjobs.job_events order by id").fetchall()
        assert after == before
        homes = {
            r[0]
            for r in conn.execute("select distinct tableoid::regclass::text from pgjobs.job_events")
        }
        assert homes == {"pgjobs.job_events_default"}


def _scans(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """Every scan node of a JSON plan: (node type, relation or index)."""
    found = []
    if "Scan" in plan["Node Type"]:
        found.append((plan["Node Type"], plan.get("Index Name") or plan.get("Relation Name", "")))
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


def test_history_reads_use_each_partitions_indexes(dsn: str) -> None:
    """A job's history: one probe of (job_id, id) per partition, merged in id
    order; a time window: only the partitions of its periods."""
    with psycopg.connect(dsn) as conn:
        _installed_long_ago(conn)
        conn.execute("select pgjobs.partitions_ensure(now() - interval '3 days')")
        conn.execute("select pgjobs.partitions_ensure()")
        for days in range(4):
            _finish_at(conn, "completed", dt.datetime.now(dt.UTC) - days * DAY)
        past = [
            _events_name(_bounds(conn, dt.datetime.now(dt.UTC) - days * DAY - DAY / 24)[0])
            for days in range(1, 4)
        ]
        conn.execute("analyze pgjobs.job_events")
        conn.execute("set enable_seqscan = off")  # tiny tables: as on big ones
        history = conn.execute(
            "explain (format json) " + sql.query("job_history"), {"id": 1}
        ).fetchone()
        window = conn.execute(
            "explain (analyze, format json) select count(*) from pgjobs.job_events"
            " where at > now() - interval '1 hour'"
        ).fetchone()
    assert history is not None and window is not None
    scans = _scans(history[0][0]["Plan"])
    assert len(scans) >= 8  # every partition made, the default one
    assert {kind for kind, _ in scans} <= {"Index Scan", "Index Only Scan"}
    assert all(index.endswith("job_id_id_idx") for _, index in scans), scans
    touched = {scan[1] for scan in _scans(window[0][0]["Plan"]) if scan[0] != "Bitmap Index Scan"}
    # The periods ended before the window are never read (the later ones, made
    # ahead, are empty).
    assert not touched & set(past), touched
    assert touched


def test_a_lease_renewal_waiting_on_a_job_completed_meanwhile_renews_the_rest(
    dsn: str,
) -> None:
    """The beacon's renewal waits for the row of a job whose completion is
    committing; the completion moves it to jobs_finished, which fails the
    waiting UPDATE with 40001. The beacon tries again at once: the other
    leases are renewed and its session is kept (it used to count as a lost
    session: dropped, and made again after a backoff)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        factories.ensure_type(conn)
        conn.execute("insert into pgjobs.jobs (job_type) select %s from generate_series(1, 2)",
                     (factories.JOB_TYPE,))
        jobs = [Lease(r[0], r[1]) for r in conn.execute(
            "select id, lease_token from pgjobs.claim('w', array['default'], 2, 60)")]
        assert len(jobs) == 2
        done, kept = jobs
        beacon = Beacon(WorkerConfig(dsn=dsn, lease_seconds=600), "w", Leases(), Slots(1), 0,
                        threading.Event())
        beacon.leases.hold(jobs)
        with psycopg.connect(dsn) as completer, psycopg.connect(dsn, autocommit=True) as renewer:
            run(completer, complete_many.bind([(done, Completed(None, 1.0))]))  # not committed
            outcome: list[BaseException | None] = []

            def renew() -> None:
                try:
                    beacon.renew(renewer)
                    outcome.append(None)
                except BaseException as exc:  # the test reports it
                    outcome.append(exc)

            thread = threading.Thread(target=renew)
            thread.start()
            queries.wait_for(
                lambda: conn.execute(
                    "select wait_event_type from pg_stat_activity where pid = %s",
                    (renewer.info.backend_pid,),
                ).fetchone() == ("Lock",),
                message="the renewal never waited for the completing job's row",
            )
            completer.commit()
            thread.join(timeout=30)
            assert outcome == [None]
            assert not renewer.closed
        states = dict(conn.execute(
            "select id, state from pgjobs.jobs where id = any(%s)", ([done.id, kept.id],)))
        assert states == {done.id: "completed", kept.id: "running"}
        row = conn.execute("select lease_expires_at > now() + interval '300 seconds'"
                           " from pgjobs.jobs where id = %s", (kept.id,)).fetchone()
        assert row == (True,), "the other lease was not renewed"
