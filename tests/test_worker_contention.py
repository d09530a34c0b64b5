"""More runnable processes than CPUs (pgjobs/worker/cpuwait.py): the time a
worker process waits for a CPU is not counted as its handlers' work, so its
claims and completion writes stay large instead of shrinking towards one job
each (which multiplied the statements per job, and so the waits: the collapse
at 64 processes on 2 cores in docs/scaling.md section 1).

The contention is real: the worker and a few busy-looping processes are pinned
to one CPU, so a handler that sleeps 1 ms waits several more for the CPU.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs.statements import Bound, Completed, run_writes
from pgjobs.statements.outcomes import Lease, complete_many
from pgjobs.worker.cpuwait import RunQueueClock
from tests.support import factories, queries, workers

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity"),
]

_CPU = 0
_HOGS = 2  # busy processes sharing the CPU with the worker
_JOBS = 2400
# Runs the rest of the command line pinned to _CPU (exec: the pid is the command's).
_PINNED = (
    f"import os, sys; os.sched_setaffinity(0, {{{_CPU}}});"
    " os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


@contextlib.contextmanager
def hogs(count: int = _HOGS) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` processes spinning on _CPU until the block ends."""
    started = [
        subprocess.Popen([sys.executable, "-c", _PINNED, "-c", "while True: pass"])
        for _ in range(count)
    ]
    try:
        yield started
    finally:
        for proc in started:
            proc.kill()
            proc.wait(10)


def _pinned(command: list[str]) -> list[str]:
    assert command[0] == sys.executable
    return [sys.executable, "-c", _PINNED, *command[1:]]


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {timeout}s"
        time.sleep(0.2)


def test_the_run_queue_clock_counts_the_wait_for_a_cpu_and_work_time_leaves_it_out() -> None:
    """A thread pinned beside busy processes waits for the CPU; the clock
    sees it, and ``work_time`` advances by the wall time less that wait: the
    time the thread ran. The thread spins rather than sleeps, so it takes its
    fair share and no more (a thread waking from a sleep may preempt the busy
    ones at once, and then barely waits)."""
    clock = RunQueueClock()
    if clock.fd is None:
        pytest.skip("no /proc/thread-self/schedstat")
    mask = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {_CPU})
        with hogs():
            _wait(lambda: clock.seconds() > 0 and _spun_beside_hogs(clock), 10,
                  "queued behind the busy processes")
            wall0, wait0, work0 = time.monotonic(), clock.seconds(), clock.work_time()
            ran0 = time.thread_time()
            while time.monotonic() - wall0 < 0.3:
                pass
            wall, waited, worked, ran = (
                time.monotonic() - wall0,
                clock.seconds() - wait0,
                clock.work_time() - work0,
                time.thread_time() - ran0,
            )
    finally:
        os.sched_setaffinity(0, mask)
        clock.close()
    assert waited > 0.3 * wall, (wall, waited)  # three runnable on one CPU: about 2/3
    assert worked == pytest.approx(wall - waited, abs=0.01)
    assert worked == pytest.approx(ran, abs=0.03), (worked, ran)  # the time it ran


def _spun_beside_hogs(clock: RunQueueClock) -> bool:
    """Whether a short spin already waits for the CPU (the hogs are running)."""
    start, waited = time.monotonic(), clock.seconds()
    while time.monotonic() - start < 0.05:
        pass
    return clock.seconds() - waited > 0.01


def test_a_missing_schedstat_reads_as_no_wait() -> None:
    clock = RunQueueClock("/nonexistent/schedstat")
    assert clock.fd is None
    assert clock.seconds() == 0.0


def test_claims_and_writes_stay_large_while_processes_wait_for_a_cpu(dsn: str) -> None:
    """Sixteen processes on one CPU (with two busy loops), 2,400 jobs of 1 ms:
    a claim takes 15 jobs or more on average (about 25 here, ramp-up
    included), a completion write 10 or more (about 19). Before, sized by wall
    time (a 1 ms job then "took" several), both held about 4."""
    workers.prepare(dsn)
    with psycopg.connect(dsn) as conn:
        pgjobs.enqueue_many(
            conn, [{"job_type": "lc.nap", "payload": {"seconds": 0.001}} for _ in range(_JOBS)]
        )
    with hogs(), workers.workers(dsn) as pool:
        pool.start_on(_pinned, dsn, processes=16, lease=30.0, poll=0.2)

        def done() -> bool:
            finished = queries.scalar(
                dsn, "select count(*) from pgjobs.jobs where state = 'completed'"
            )
            return bool(finished == _JOBS)

        _wait(done, 180, "all completed")
    # A claim stamps its jobs with its statement's now(), a completion write
    # with its own: jobs that share a stamp came in one claim, or left in one write.
    claims, writes = queries.rows(
        dsn,
        "select count(distinct (worker, started_at)), count(distinct (worker, finished_at))"
        " from pgjobs.jobs where job_type = 'lc.nap'",
    )[0]
    assert _JOBS / claims >= 15, (claims, writes)
    assert _JOBS / writes >= 10, (claims, writes)


def _frontend_messages(conn: psycopg.Connection[Any], write: Callable[[], None]) -> list[str]:
    """The protocol messages the client sent while ``write`` ran (libpq's trace)."""
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        try:
            write()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        lines = [line.split("\t") for line in trace.read().splitlines()]
    return [fields[3].split()[0] for fields in lines if len(fields) > 3 and fields[1] == "F"]


def test_a_single_completion_write_is_sent_with_its_sync(dsn: str) -> None:
    """One write is sent outside pipeline mode, its Sync in the same send: in
    a pipeline the Execute left at once and the Sync only when the block
    ended, and meanwhile the server held the write's transaction (row locks,
    the xmin horizon) open for a client that a busy CPU had descheduled. The
    trace shows the mode: a pipeline ends Sync, Flush. Two writes still share
    one pipeline (one round trip)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = [factories.make_job(conn, "running") for _ in range(3)]
        tokens = dict(
            queries.rows(dsn, "select id, lease_token from pgjobs.jobs where id = any(%s)", (ids,))
        )
        done = Completed(None, 1.0)

        def complete(job_ids: list[int]) -> Bound[Any]:
            return complete_many.bind([(Lease(i, tokens[i]), done) for i in job_ids])

        one = _frontend_messages(conn, lambda: run_writes(conn, [complete(ids[:1])]))
        two = _frontend_messages(
            conn, lambda: run_writes(conn, [complete(ids[1:2]), complete(ids[2:])])
        )
    assert one[-2:] == ["Execute", "Sync"] and "Flush" not in one, one
    assert two.count("Execute") == 2 and two.count("Sync") == 1, two  # one pipeline
    states = queries.rows(dsn, "select state from pgjobs.jobs where id = any(%s)", (ids,))
    assert sorted(s for (s,) in states) == ["completed"] * 3
