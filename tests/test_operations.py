"""Operations: views, metrics, Prometheus, watch, listen, list paging, prune."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

import pgjobs
from pgjobs import monitoring, retention

ROOT = Path(__file__).resolve().parent.parent


def _job_type(conn: psycopg.Connection[Any], name: str = "ops.noop") -> str:
    conn.execute(
        "insert into pgjobs.job_types (name, handler) values (%s, 'pgjobs.demo:thumbnail')"
        " on conflict do nothing",
        (name,),
    )
    return name


def _finish(conn: psycopg.Connection[Any], job_id: int, state: str) -> None:
    """Drives a job through the real claim and a guarded exit from running."""
    conn.execute("update pgjobs.jobs set priority = 0 where id = %s", (job_id,))
    row = conn.execute(
        "select lease_token from pgjobs.claim('test-worker', array['default'], 1, 30)"
        " where id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None, "the claim did not return the job"
    conn.execute(
        "update pgjobs.jobs set state = %s, finished_at = now(), last_duration_ms = 5"
        " where id = %s and lease_token = %s",
        (state, job_id, row[0] if isinstance(row, tuple) else row["lease_token"]),
    )


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pgjobs.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_processing_times_p95_of_1_to_100_ms_is_95(conn: psycopg.Connection[Any]) -> None:
    name = _job_type(conn)
    job_id = pgjobs.enqueue(conn, name, {"image": 1}).id
    conn.execute(
        "insert into pgjobs.job_events (job_id, job_type, attempt, from_state, to_state,"
        " duration_ms) select %s, %s, 1, 'running', 'completed', d"
        " from generate_series(1, 100) d",
        (job_id, name),
    )
    row = conn.execute(
        "select attempts, avg_ms, p50_ms, p95_ms from pgjobs.processing_times where job_type = %s",
        (name,),
    ).fetchone()
    assert row is not None
    assert row["attempts"] == 100
    assert float(row["avg_ms"]) == pytest.approx(50.5)
    assert float(row["p50_ms"]) == pytest.approx(50.5, abs=1)
    assert float(row["p95_ms"]) == pytest.approx(95, abs=1)


def test_failure_rates_and_dead_letter_count_known_failures(conn: psycopg.Connection[Any]) -> None:
    name = _job_type(conn, "ops.flaky")
    job_id = pgjobs.enqueue(conn, name, {"image": 1}).id
    conn.execute(
        "insert into pgjobs.job_events (job_id, job_type, attempt, from_state, to_state,"
        " error_class, duration_ms) values"
        " (%(id)s, %(t)s, 1, 'running', 'retrying', 'ValueError', 1),"
        " (%(id)s, %(t)s, 2, 'running', 'retrying', 'timeout', 1),"
        " (%(id)s, %(t)s, 3, 'running', 'dead', 'ValueError', 1),"
        " (%(id)s, %(t)s, 1, 'running', 'completed', null, 1)",
        {"id": job_id, "t": name},
    )
    row = conn.execute("select * from pgjobs.failure_rates where job_type = %s", (name,)).fetchone()
    assert row is not None
    assert (row["attempts"], row["failures"], row["timeouts"], row["dead"]) == (4, 3, 1, 1)
    assert float(row["rate"]) == pytest.approx(0.75)

    _finish(conn, job_id, "dead")
    dead = conn.execute("select id from pgjobs.dead_letter where job_type = %s", (name,)).fetchall()
    assert [r["id"] for r in dead] == [job_id]


def test_queue_depth_counts_by_queue_priority_and_state(conn: psycopg.Connection[Any]) -> None:
    name = _job_type(conn)
    for priority in (0, 0, 3):
        pgjobs.enqueue(conn, name, {"image": 1}, queue="depthq", priority=priority)
    pgjobs.enqueue(conn, name, {"image": 1}, queue="depthq", priority=3, delay=3600)
    rows = conn.execute(
        "select priority, queued, scheduled from pgjobs.queue_depth where queue = 'depthq'"
        " order by priority"
    ).fetchall()
    assert [(r["priority"], r["queued"], r["scheduled"]) for r in rows] == [(0, 2, 0), (3, 1, 1)]


def test_prometheus_output_parses_and_matches_json(conn: psycopg.Connection[Any]) -> None:
    name = _job_type(conn)
    for _ in range(3):
        pgjobs.enqueue(conn, name, {"image": 1}, organization="acme")
    data = monitoring.metrics(conn)
    text = monitoring.prometheus_text(data)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    counted = {
        (r["organization"], r["job_type"], r["state"]): r["jobs"] for r in data["job_counts"]
    }
    assert counted[("acme", name, "queued")] == 3
    for (org, job_type, state), jobs in counted.items():
        key = (
            "pgjobs_jobs",
            tuple(
                sorted({"organization": org or "", "job_type": job_type, "state": state}.items())
            ),
        )
        assert samples[key] == jobs
    assert samples[("pgjobs_postgres_jobs_total_bytes", ())] == data["postgres"]["jobs_total_bytes"]


def test_list_with_date_range_and_keyset_pages_returns_each_job_once(
    conn: psycopg.Connection[Any],
) -> None:
    name = _job_type(conn)
    ids = [
        r.id
        for r in pgjobs.enqueue_many(
            conn,
            [
                {"job_type": name, "payload": {"image": i}, "organization": "pager"}
                for i in range(25)
            ],
        )
    ]
    # Spread created_at over 25 days so the range cuts some off.
    conn.execute(
        "update pgjobs.jobs set created_at = now() - make_interval(days => (id - %s)::int)"
        " where id = any(%s)",
        (ids[0], ids),
    )
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=19, hours=12)
    until = dt.datetime.now(dt.UTC) - dt.timedelta(days=4, hours=12)
    expected = {
        r["id"]
        for r in conn.execute(
            "select id from pgjobs.jobs where id = any(%s) and created_at >= %s"
            " and created_at < %s",
            (ids, since, until),
        ).fetchall()
    }
    assert len(expected) == 15
    seen: list[int] = []
    after = None
    while True:
        page = pgjobs.list_jobs(
            conn, organization="pager", since=since, until=until, limit=4, after_id=after
        )
        seen.extend(r["id"] for r in page)
        if len(page) < 4:
            break
        after = page[-1]["id"]
    assert len(seen) == len(set(seen))
    assert set(seen) == expected
    assert seen == sorted(seen, reverse=True)


def test_prune_deletes_old_finished_jobs_in_batches_and_spares_the_rest(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        name = _job_type(conn)
        results = pgjobs.enqueue_many(
            conn, [{"job_type": name, "payload": {"image": i}} for i in range(2_000)]
        )
        ids = [r.id for r in results]
        old, recent, active = ids[:1_500], ids[1_500:1_800], ids[1_800:]
        rows = conn.execute(
            "select id, lease_token from pgjobs.claim('w', array['default'], 2000, 30)"
        ).fetchall()
        conn.execute("update pgjobs.jobs set state = 'queued' where id = any(%s)", (active,))
        conn.execute(
            "update pgjobs.jobs set state = 'completed', finished_at = now() - interval '40 days'"
            " where id = any(%s)",
            (old,),
        )
        conn.execute(
            "update pgjobs.jobs set state = 'completed', finished_at = now() where id = any(%s)",
            (recent,),
        )
        assert len(rows) == 2_000
        conn.commit()

        batches: list[int] = []
        xids_before = conn.execute("select txid_current()").fetchone()
        conn.commit()
        total = retention.prune(conn, 30 * 86400, batch_size=400, progress=batches.append)
        xids_after = conn.execute("select txid_current()").fetchone()
        conn.commit()

        assert total == 1_500
        assert batches == [400, 800, 1200, 1500]  # four transactions, each short
        assert xids_before is not None and xids_after is not None
        assert xids_after[0] - xids_before[0] >= 4
        left = {r[0] for r in conn.execute("select id from pgjobs.jobs").fetchall()}
        assert left == set(recent) | set(active)
        events = conn.execute(
            "select count(*) from pgjobs.job_events where job_id = any(%s)", (old,)
        ).fetchone()
        assert events == (0,)


def test_watch_exits_0_when_the_job_completes_and_1_when_it_dies(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        name = _job_type(conn)
        done = pgjobs.enqueue(conn, name, {"image": 1}).id
        dead = pgjobs.enqueue(conn, name, {"image": 2}).id
        _finish(conn, done, "completed")
        _finish(conn, dead, "dead")
        conn.commit()
    ok = _cli("watch", "--dsn", dsn, str(done))
    assert ok.returncode == 0, ok.stderr
    assert "completed" in ok.stdout
    failed = _cli("watch", "--dsn", dsn, str(dead))
    assert failed.returncode == 1, failed.stderr
    assert "dead" in failed.stdout


def test_subscribe_receives_each_progress_value_of_one_job(dsn: str, wait_for: Any) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        name = _job_type(conn)
        job_id = pgjobs.enqueue(conn, name, {"image": 1}, organization="acme").id
        other = pgjobs.enqueue(conn, name, {"image": 2}, organization="globex").id
        claimed = {
            r[0]: r[1]
            for r in conn.execute(
                "select id, lease_token from pgjobs.claim('w', array['default'], 10, 30)"
            ).fetchall()
        }

    received: list[dict[str, Any]] = []
    ready = threading.Event()

    def listen() -> None:
        events = pgjobs.subscribe(dsn, organization="acme", job_id=job_id, timeout=5)
        ready.set()
        for event in events:
            received.append(event)
            if event.get("progress") == 90:
                return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(5)
    # The generator LISTENs on first next(); give it a moment by polling its backend.
    wait_for(lambda: _listeners(dsn) >= 1, timeout=10, message="subscriber never LISTENed")
    from pgjobs.statements.progress import progress

    with psycopg.connect(dsn, autocommit=True) as conn:
        for pct in (10, 50, 90):
            for jid in (other, job_id):
                progress(conn, job_id=jid, lease_token=claimed[jid], percent=pct, message=None)
            row = conn.execute(
                "select progress from pgjobs.jobs where id = %s", (job_id,)
            ).fetchone()
            assert row is not None and float(row[0]) == pct
    thread.join(10)
    assert [e["progress"] for e in received] == [10, 50, 90]
    assert all(e["id"] == job_id and e["event"] == "progress" for e in received)
    assert all(
        set(e) == {"id", "organization", "progress", "state", "event", "hint"} for e in received
    )
    assert all(e["hint"] is True for e in received)  # progress is not read back


def _listeners(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity where datname = current_database()"
            " and query ilike 'listen pgjobs_progress%%'"
        ).fetchone()
        return int(row[0]) if row else 0


def test_metrics_cli_json_carries_the_view_figures(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        name = _job_type(conn)
        pgjobs.enqueue(conn, name, {"image": 1}, organization="acme")
        conn.commit()
    out = _cli("metrics", "--dsn", dsn, "--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {"organization": "acme", "job_type": name, "state": "queued", "jobs": 1} in data[
        "job_counts"
    ]
    prom = _cli("metrics", "--dsn", dsn, "--format", "prometheus")
    assert prom.returncode == 0, prom.stderr
    assert 'pgjobs_jobs{job_type="ops.noop",organization="acme",state="queued"} 1.0' in prom.stdout
