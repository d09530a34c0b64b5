"""Wake-ups with many idle processes (pgjobs/worker/wakeups.py): one idle
process per supervisor listens, so one enqueue wakes one or two of them, not
all; the job is claimed once; a shallow queue is not hoarded by the process
that claims first; and a listener killed -9 leaves its turn to another.

Real ``pgjobs worker`` processes; the poll is ten minutes, so a job that starts
within seconds was woken, not polled for.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgjobs
from tests.support import queries, workers

pytestmark = pytest.mark.slow

POLL = 600.0  # past the whole test: only a wake-up (never the poll) starts a job or a claim
# The control sessions of the worker processes (their claims and LISTEN).
# Only this test's database: pg_stat_activity shows every database's sessions.
_CONTROL = (
    "select pid, state_change from pg_stat_activity"
    " where datname = current_database() and application_name like %s"
)


@pytest.fixture
def pool(dsn: str) -> Iterator[workers.Workers]:
    workers.prepare(dsn)
    with workers.workers(dsn) as started:
        yield started


def _start(pool: workers.Workers, processes: int) -> workers.Worker:
    return pool.start(processes=processes, poll=POLL, lease=30.0)


def _enqueue(dsn: str, *payloads: dict[str, Any]) -> list[int]:
    """The jobs in one transaction (they become visible together)."""
    with psycopg.connect(dsn) as conn:
        rows = pgjobs.enqueue_many(conn, [{"job_type": "lc.work", "payload": p} for p in payloads])
    return [r.id for r in rows]


def _finished(dsn: str, ids: list[int]) -> bool:
    done = queries.scalar(
        dsn, "select count(*) from pgjobs.jobs where id = any(%s) and state = 'completed'", (ids,)
    )
    return bool(done == len(ids))


def _control_sessions(dsn: str) -> dict[int, Any]:
    """backend pid -> when the session last went idle, per worker process."""
    return dict(queries.rows(dsn, _CONTROL, ("pgjobs worker %",)))


def _settled(dsn: str, processes: int, wait_for: Any) -> dict[int, Any]:
    """Once every process's session has been idle for a second (started, or
    done with the last job): their last state changes."""

    def quiet() -> bool:
        sessions = _control_sessions(dsn)
        if len(sessions) != processes:
            return False
        age = queries.scalar(
            dsn,
            "select extract(epoch from now() - max(state_change)) from pg_stat_activity"
            " where datname = current_database() and application_name like %s",
            ("pgjobs worker %",),
        )
        return age is not None and float(age) > 1.0

    wait_for(quiet, timeout=30, message="the worker processes did not settle")
    return _control_sessions(dsn)


def test_one_enqueue_wakes_one_listener_not_every_idle_process(
    dsn: str, pool: workers.Workers, wait_for: Any
) -> None:
    """Six idle processes; each of three jobs enqueued one at a time starts
    within seconds (the poll is ten minutes), runs once, and makes at most two of
    the processes' sessions do anything: the listener that claims it and the
    sibling it rings to listen meanwhile. (With every idle process listening,
    all six claimed for each job.)"""
    worker = _start(pool, processes=6)
    for n in range(3):
        before = _settled(dsn, 6, wait_for)
        ids = _enqueue(dsn, {"n": n})
        wait_for(lambda ids=ids: _finished(dsn, ids), timeout=10, message="the job did not start")
        time.sleep(0.5)  # a session that was woken has run its statements by now
        after = _control_sessions(dsn)
        # Sessions of the same processes (one a fault made anew is no wake-up).
        woken = [pid for pid, at in after.items() if pid in before and before[pid] != at]
        troubles = [e for e in worker.events() if e.get("level") in ("warning", "error")]
        assert 1 <= len(woken) <= 2, (n, woken, sorted(after), sorted(before), troubles)
    once = "select count(*), count(distinct job_id), max(attempt) from lc_done"
    assert queries.rows(dsn, once) == [(3, 3, 1)]


def test_two_jobs_enqueued_together_start_on_two_idle_processes(
    dsn: str, pool: workers.Workers, wait_for: Any
) -> None:
    """After a burst (the processes' claims grew to many jobs at a time) the
    queue runs dry: two jobs enqueued together then start at once on two
    processes, not one after the other in one process's claim."""
    _start(pool, processes=2)
    burst = _enqueue(dsn, *({"n": i} for i in range(300)))
    wait_for(lambda: _finished(dsn, burst), timeout=60, message="the burst did not drain")
    _settled(dsn, 2, wait_for)

    pair = _enqueue(dsn, {"seconds": 1.5}, {"seconds": 1.5})
    wait_for(lambda: _finished(dsn, pair), timeout=20, message="the pair did not run")
    runs = queries.rows(dsn, "select pid, at from lc_runs where job_id = any(%s)", (pair,))
    assert len({pid for pid, _ in runs}) == 2, runs
    starts = sorted(at for _, at in runs)
    assert (starts[1] - starts[0]).total_seconds() < 1.0, runs  # together, not in turn


def test_a_listener_killed_leaves_its_turn_to_another_process(
    dsn: str, pool: workers.Workers, wait_for: Any
) -> None:
    """The process holding the listening turn is killed -9: the supervisor
    gives its turn back, another process listens, and a job enqueued next
    starts within seconds."""
    worker = _start(pool, processes=3)
    _settled(dsn, 3, wait_for)
    # The listener is the one whose last statement, before it slept, asked
    # when the next delayed job is due; the others wait on the doorbell.
    listener = queries.scalar(
        dsn,
        "select split_part(application_name, ' ', 3)::int from pg_stat_activity"
        " where datname = current_database() and application_name like %s"
        "   and query like %s",
        ("pgjobs worker %", "%Seconds until the next queued%"),
    )
    assert listener is not None, worker.output()[-3000:]
    os.kill(listener, signal.SIGKILL)
    wait_for(lambda: workers.pid_gone(listener), timeout=10)
    wait_for(
        lambda: len(worker.children()) >= 3 and listener not in worker.children(),
        timeout=15,
        message="the killed process was not replaced",
    )
    _settled(dsn, 3, wait_for)
    ids = _enqueue(dsn, {"n": 1})
    wait_for(lambda: _finished(dsn, ids), timeout=10, message="no process listened any more")
