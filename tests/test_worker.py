"""The worker end to end: real worker processes started through the CLI run
each committed job exactly once, drain a backlog without losing or repeating a
job, and apply the retry policy (backoff, max_attempts, permanent errors).

Backoff is checked under an injected clock: the claim and failure queries the
worker runs take ``now``, so the test reads the ``run_at`` each failure sets
instead of sleeping through the delays.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow, dict_row

import pgjobs
from pgjobs import registry
from pgjobs.statements import Completed, Failed, Lease
from pgjobs.statements.claim import claim
from pgjobs.statements.outcomes import complete_many, fail_many
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.session import connect
from tests.support import handlers, queries, workers

Conn = psycopg.Connection[DictRow]


# -- helpers ------------------------------------------------------------------


@pytest.fixture
def pool(dsn: str) -> Iterator[workers.Workers]:
    """The lifecycle harness (real ``pgjobs worker`` processes, all killed when the
    test ends), on a database with the side table and every t.* type."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(handlers.SIDE_TABLE)
        registry.sync(conn)
    with workers.workers(dsn) as started:
        yield started


def run_until_idle(
    pool: workers.Workers, *, processes: int = 2, queues: str = "default", timeout: float = 30
) -> workers.Worker:
    """``pgjobs worker --processes N --import tests.support.handlers --exit-when-idle``,
    waited for: it exits once no job in its queues is left unfinished."""
    worker = pool.start(
        processes=processes,
        extra=("--import", "tests.support.handlers", "--queues", queues, "--exit-when-idle"),
    )
    code = worker.wait(timeout)
    assert code == 0, worker.output()[-5000:]
    return worker


def job(dsn: str, job_id: int) -> dict[str, Any]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        row = conn.execute(
            "select state, attempt, max_attempts, result, last_error, last_error_class, "
            "run_at, finished_at from pgjobs.jobs where id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None, f"no job {job_id}"
    return row


def events(dsn: str, job_id: int) -> list[tuple[Any, ...]]:
    """(attempt, from_state, to_state, error_class, message) per history row."""
    return queries.rows(
        dsn,
        "select attempt, from_state, to_state, error_class, message "
        "from pgjobs.job_events where job_id = %s order by id",
        (job_id,),
    )


def enqueue(dsn: str, job_type: str, payload: dict[str, Any] | None = None) -> int:
    with psycopg.connect(dsn) as conn:
        return pgjobs.enqueue(conn, job_type, payload).id


# -- exactly once ---------------------------------------------------------------


@pytest.mark.slow
def test_committed_job_runs_exactly_once_and_uncommitted_or_rolled_back_ones_never(
    dsn: str, pool: workers.Workers
) -> None:
    with psycopg.connect(dsn) as caller:
        job_id = pgjobs.enqueue(caller, "t.record", {"n": 1}).id
        # The caller's transaction is still open: a worker finds nothing to do.
        run_until_idle(pool)
        assert queries.scalar(dsn, "select count(*) from side") == 0
        assert queries.scalar(dsn, "select count(*) from pgjobs.jobs") == 0
        caller.commit()

    with psycopg.connect(dsn) as other:
        rolled_back = pgjobs.enqueue(other, "t.record", {"n": 2}).id
        other.rollback()

    run_until_idle(pool)
    run_until_idle(pool)  # a second worker finds nothing left to run

    assert queries.rows(dsn, "select job_id, attempt from side") == [(job_id, 1)]
    done = job(dsn, job_id)
    assert (done["state"], done["attempt"], done["last_error"]) == ("completed", 1, None)
    assert events(dsn, job_id) == [
        (1, "queued", "running", None, None),
        (1, "running", "completed", None, None),
    ]
    assert (
        queries.scalar(dsn, "select count(*) from pgjobs.jobs where id = %s", (rolled_back,)) == 0
    )


@pytest.mark.slow
def test_four_processes_drain_5000_jobs_each_exactly_once(dsn: str, pool: workers.Workers) -> None:
    total = 5000
    with psycopg.connect(dsn) as conn:
        ids = [
            r.id
            for r in pgjobs.enqueue_many(
                conn, [{"job_type": "t.record", "payload": {"n": i}} for i in range(total)]
            )
        ]
    assert len(set(ids)) == total

    worker = run_until_idle(pool, processes=4, timeout=90)

    # side.job_id is the primary key and written in each job's own transaction:
    # a second run of any job would have failed on it, and left a failure event.
    assert queries.scalar(dsn, "select count(*) from side") == total
    assert {r[0] for r in queries.rows(dsn, "select job_id from side")} == set(ids)
    assert queries.rows(
        dsn, "select state, count(*), max(attempt) from pgjobs.jobs group by 1"
    ) == [("completed", total, 1)]
    assert queries.rows(dsn, "select distinct attempt from side") == [(1,)]
    assert queries.rows(
        dsn, "select from_state, to_state, count(*) from pgjobs.job_events group by 1, 2 order by 1"
    ) == [("queued", "running", total), ("running", "completed", total)]
    # The work was shared: more than one process claimed jobs.
    processes = queries.scalar(dsn, "select count(distinct worker) from pgjobs.jobs")
    assert 1 < processes <= 4, worker.output()[-3000:]


def test_large_batches_complete_each_job_with_its_own_result(
    dsn: str, pool: workers.Workers
) -> None:
    """Claims of up to 2,000 jobs: their completions are written in chunks, and
    every job still gets the result of its own run."""
    total = 1500
    with psycopg.connect(dsn) as conn:
        ids = [
            r.id
            for r in pgjobs.enqueue_many(
                conn, [{"job_type": "t.add", "payload": {"a": i, "b": 1}} for i in range(total)]
            )
        ]
    worker = pool.start(
        processes=1,
        extra=(
            "--import",
            "tests.support.handlers",
            "--queues",
            "default",
            "--batch-size",
            "2000",
            "--exit-when-idle",
        ),
    )
    assert worker.wait(60) == 0, worker.output()[-5000:]
    rows = queries.rows(
        dsn,
        "select id, state, (result->>'sum')::int, (payload->>'a')::int from pgjobs.jobs",
    )
    assert sorted(r[0] for r in rows) == sorted(ids)
    wrong = [r for r in rows if r[1] != "completed" or r[2] != r[3] + 1]
    assert wrong == [], worker.output()[-3000:]


@pytest.mark.slow
def test_idle_workers_wake_on_notify_long_before_their_poll(
    dsn: str, pool: workers.Workers, wait_for: Any
) -> None:
    """Wake-ups come by LISTEN/NOTIFY, the poll (a minute here) is only the
    safety net: also after a busy stretch of full batches, during which the
    workers stop listening, and when they listen again."""
    pool.start(poll=60.0, extra=("--import", "tests.support.handlers", "--queues", "default"))

    def completed(job_id: int) -> bool:
        return bool(job(dsn, job_id)["state"] == "completed")

    first = enqueue(dsn, "t.noop")
    wait_for(lambda: completed(first), timeout=15, message="the first job did not run")
    with psycopg.connect(dsn) as conn:
        pgjobs.enqueue_many(conn, [{"job_type": "t.noop"}] * 1000)
    wait_for(
        lambda: (
            queries.scalar(dsn, "select count(*) from pgjobs.jobs where state <> 'completed'") == 0
        ),
        timeout=60,
    )
    for _ in range(3):
        later = enqueue(dsn, "t.noop")
        wait_for(lambda j=later: completed(j), timeout=10, message="an idle worker slept on")


# -- retries ----------------------------------------------------------------------


@pytest.mark.slow
def test_transient_failure_retries_until_max_attempts_then_ends_dead(
    dsn: str, pool: workers.Workers
) -> None:
    job_id = enqueue(dsn, "t.always_fails")  # max_attempts=4

    run_until_idle(pool)

    dead = job(dsn, job_id)
    assert (dead["state"], dead["attempt"], dead["max_attempts"]) == ("dead", 4, 4)
    assert dead["last_error"] == "attempt 4 failed"
    assert dead["last_error_class"] == "Boom"
    assert dead["finished_at"] is not None
    assert events(dsn, job_id) == [
        (1, "queued", "running", None, None),
        (1, "running", "retrying", "Boom", "attempt 1 failed"),
        (2, "retrying", "running", None, None),
        (2, "running", "retrying", "Boom", "attempt 2 failed"),
        (3, "retrying", "running", None, None),
        (3, "running", "retrying", "Boom", "attempt 3 failed"),
        (4, "retrying", "running", None, None),
        (4, "running", "dead", "Boom", "attempt 4 failed"),
    ]
    # Every attempt wrote its side row in the job's transaction; each failure
    # rolled it back.
    assert queries.scalar(dsn, "select count(*) from side") == 0
    # Each retry was claimed only after the failure that scheduled it.
    times = [
        r[0]
        for r in queries.rows(
            dsn, "select at from pgjobs.job_events where job_id = %s order by id", (job_id,)
        )
    ]
    assert times == sorted(times)


@pytest.mark.slow
def test_transient_failure_then_success_completes_on_the_second_attempt(
    dsn: str, pool: workers.Workers
) -> None:
    job_id = enqueue(dsn, "t.fails_once_then_succeeds")

    run_until_idle(pool)

    done = job(dsn, job_id)
    assert (done["state"], done["attempt"], done["result"]) == ("completed", 2, {"attempt": 2})
    assert queries.rows(dsn, "select job_id, attempt from side") == [(job_id, 2)]
    assert [e[:4] for e in events(dsn, job_id)] == [
        (1, "queued", "running", None),
        (1, "running", "retrying", "TransientError"),
        (2, "retrying", "running", None),
        (2, "running", "completed", None),
    ]


@pytest.mark.slow
def test_max_attempts_one_means_no_retry(dsn: str, pool: workers.Workers) -> None:
    job_id = enqueue(dsn, "t.single_attempt")

    run_until_idle(pool)

    dead = job(dsn, job_id)
    assert (dead["state"], dead["attempt"], dead["max_attempts"]) == ("dead", 1, 1)
    assert dead["last_error"] == "no second chance"
    assert events(dsn, job_id) == [
        (1, "queued", "running", None, None),
        (1, "running", "dead", "Boom", "no second chance"),
    ]


@pytest.mark.slow
def test_permanent_error_goes_dead_at_once_with_attempts_left(
    dsn: str, pool: workers.Workers
) -> None:
    job_id = enqueue(dsn, "t.permanent")  # max_attempts=5

    run_until_idle(pool)

    dead = job(dsn, job_id)
    assert (dead["state"], dead["attempt"], dead["max_attempts"]) == ("dead", 1, 5)
    assert dead["last_error"] == "this input can never work"
    assert dead["last_error_class"] == "PermanentError"
    assert events(dsn, job_id) == [
        (1, "queued", "running", None, None),
        (1, "running", "dead", "PermanentError", "this input can never work"),
    ]
    traceback = queries.scalar(
        dsn,
        "select traceback from pgjobs.job_events where job_id = %s and to_state = 'dead'",
        (job_id,),
    )
    assert "PermanentError: this input can never work" in traceback


# -- backoff under an injected clock ----------------------------------------------


def _claim(conn: Conn, n: int, now: dt.datetime) -> list[dict[str, Any]]:
    jobs = claim(conn, worker="test/1", queues=["q_backoff"], n=n, lease_seconds=30, now=now)
    return [job._asdict() for job in jobs]


def _fail(conn: Conn, claimed: list[dict[str, Any]], now: dt.datetime) -> list[dict[str, Any]]:
    """What the worker writes for transient failures (runner._failures)."""
    failures = [
        (
            Lease(c["id"], c["lease_token"]),
            Failed("Boom", f"attempt {c['attempt']} failed", None, False, 1.0),
        )
        for c in claimed
    ]
    rows = fail_many(conn, failures, now=now)
    return [dict(zip(("id", "state", "run_at"), row, strict=True)) for row in rows]


def test_retry_delays_grow_exponentially_with_full_jitter_up_to_the_cap(conn: Conn) -> None:
    """t.backoff: base 1 s, cap 8 s, 6 attempts. Each failure at ``now`` sets
    run_at = now + uniform(0, min(cap, base * 2^(attempt-1))), so over many jobs
    the mean delay doubles per attempt until the cap, and the job is never
    claimed before its run_at."""
    registry.sync(conn)
    n = 300
    ids = {r.id for r in pgjobs.enqueue_many(conn, [{"job_type": "t.backoff"}] * n)}
    row = conn.execute("select now() + interval '1 second' as t").fetchone()
    assert row is not None
    now: dt.datetime = row["t"]
    means = []
    for attempt in range(1, 7):
        claimed = _claim(conn, n + 1, now)
        assert {c["id"] for c in claimed} == ids
        assert {c["attempt"] for c in claimed} == {attempt}
        failed = _fail(conn, claimed, now)
        assert {f["id"] for f in failed} == ids
        if attempt == 6:
            assert {f["state"] for f in failed} == {"dead"}
            break
        assert {f["state"] for f in failed} == {"retrying"}
        bound = min(8.0, 1.0 * 2 ** (attempt - 1))
        delays = [(f["run_at"] - now).total_seconds() for f in failed]
        assert min(delays) >= 0 and max(delays) <= bound, (attempt, bound)
        # Full jitter: spread over the whole range, centred on half the bound.
        assert min(delays) < 0.2 * bound and max(delays) > 0.8 * bound, (attempt, bound)
        assert 0.4 * bound < statistics.fmean(delays) < 0.6 * bound, (attempt, bound)
        means.append(statistics.fmean(delays))
        # Not one job is claimed before its run_at: at the failure's own time
        # none is due, half way through exactly those whose run_at has passed...
        assert _claim(conn, n, now) == []
        half_way = sorted(f["run_at"] for f in failed)[n // 2]
        with conn.transaction(force_rollback=True):
            due = {f["id"] for f in failed if f["run_at"] <= half_way}
            assert {c["id"] for c in _claim(conn, n, half_way)} == due
            assert n // 2 <= len(due) < n
        # ... and the next round starts once every job is due.
        now += dt.timedelta(seconds=bound + 1)

    assert means[0] < means[1] < means[2] < means[3]  # 1, 2, 4, 8 s bounds
    assert means[4] < 1.5 * means[3]  # capped at 8 s: no longer doubling
    rows = conn.execute(
        "select state, attempt, last_error, finished_at = %s as finished_now, count(*) as n "
        "from pgjobs.jobs where id = any(%s) group by 1, 2, 3, 4",
        (now, list(ids)),
    ).fetchall()
    assert rows == [
        {
            "state": "dead",
            "attempt": 6,
            "last_error": "attempt 6 failed",
            "finished_now": True,
            "n": n,
        }
    ]
    history = pgjobs.history(conn, min(ids))
    assert [(e["attempt"], e["to_state"]) for e in history] == [
        (1, "running"),
        (1, "retrying"),
        (2, "running"),
        (2, "retrying"),
        (3, "running"),
        (3, "retrying"),
        (4, "running"),
        (4, "retrying"),
        (5, "running"),
        (5, "retrying"),
        (6, "running"),
        (6, "dead"),
    ]


def test_worker_sessions_and_hot_functions_run_without_jit(dsn: str) -> None:
    """Past a few million rows the planner's estimates cross jit_above_cost and
    short statements spend milliseconds compiling: the worker's bookkeeping
    sessions and the claim, take and state-change trigger turn JIT off (and
    plan the claim once), while a job's own session keeps the server's way."""
    cfg = WorkerConfig(dsn=dsn)
    settings = "select current_setting('jit'), current_setting('synchronous_commit')"
    with connect(cfg, "worker") as control:
        assert control.execute(settings).fetchone() == ("off", "off")
    with (
        psycopg.connect(dsn) as plain,
        connect(cfg, "job", autocommit=False, bookkeeping=False) as job,
    ):
        assert job.execute(settings).fetchone() == plain.execute(settings).fetchone()
    with psycopg.connect(dsn) as c:
        configs = dict(
            c.execute(
                "select proname, proconfig from pg_proc"
                " where pronamespace = 'pgjobs'::regnamespace"
                "   and proname in ('claim', 'take', 'jobs_after_update')"
            ).fetchall()
        )
    assert set(configs) == {"claim", "take", "jobs_after_update"}
    for name, config in configs.items():
        assert "jit=off" in config, name
    for name in ("claim", "take"):
        assert "plan_cache_mode=force_generic_plan" in configs[name], name


def test_claim_and_completion_read_no_table_sequentially_on_a_small_table(dsn: str) -> None:
    """A cached plan made while the table was short must not be a sequential
    scan: the trigger's lookup of waiting children would then read the whole
    table on every completion for as long as the session lives."""
    with psycopg.connect(dsn, autocommit=True) as app:
        registry.sync(app)
        pgjobs.enqueue(app, "t.add", {"a": 1, "b": 2})
    with connect(WorkerConfig(dsn=dsn), "worker", autocommit=False) as worker:
        rows = claim(worker, worker="w", queues=["default"], n=10, lease_seconds=30.0)
        assert len(rows) == 1
        done = complete_many(worker, [(rows[0], Completed("3", 1.0))])
        assert [state for _, state in done] == ["completed"]
        scans = worker.execute(
            "select sum(pg_stat_get_xact_numscans(relid))::int"
            " from pg_partition_tree('pgjobs.jobs') where isleaf"
        ).fetchone()
        worker.commit()
    assert scans == (0,)


def test_one_completion_write_gives_each_job_its_own_result_and_duration_and_fences_each(
    dsn: str,
) -> None:
    """Outcomes of two claims (two lease tokens) written in one statement, in
    an order unlike the rows': each job gets its own result and duration, and
    the one given a stale token is left running."""
    with psycopg.connect(dsn, autocommit=True) as app:
        registry.sync(app)
        pgjobs.enqueue_many(app, [{"job_type": "t.add", "payload": {"a": i, "b": 0}}
                                  for i in range(6)])
    with connect(WorkerConfig(dsn=dsn), "worker") as worker:
        first = claim(worker, worker="w", queues=["default"], n=3, lease_seconds=30.0)
        second = claim(worker, worker="w", queues=["default"], n=3, lease_seconds=30.0)
        assert first[0].lease_token != second[0].lease_token
        stale = second[2]._replace(lease_token=first[0].lease_token)
        items = [
            (job, Completed(str(job.id * 10), float(job.id)))
            for job in (second[1], first[2], stale, first[0], second[0], first[1])
        ]
        done = complete_many(worker, items)
    assert sorted(job_id for job_id, _ in done) == sorted(
        job.id for job in (*first, *second[:2]))
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "select id, state, result, last_duration_ms from pgjobs.jobs where id = any(%s)",
            [[job.id for job in (*first, *second)]],
        ).fetchall()
    for job_id, state, result, duration in rows:
        if job_id == stale.id:
            assert (state, result) == ("running", None)
        else:
            assert (state, result, duration) == ("completed", job_id * 10, float(job_id))
