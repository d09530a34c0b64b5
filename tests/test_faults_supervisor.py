"""The supervisor never outlives its own failure, its processes never outlive
it, and a dead process's jobs are accounted as what they were: run (the
attempt counts) or never started (it does not)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

import pgjobs
from tests.support import fault_handlers, queries, workers

pytestmark = pytest.mark.slow

WaitFor = Callable[..., Any]


def _prepare(dsn: str) -> None:
    workers.prepare(dsn)
    fault_handlers.prepare(dsn)


def _enqueue(dsn: str, job_type: str, count: int, **payload: Any) -> list[int]:
    with psycopg.connect(dsn) as conn:
        results = pgjobs.enqueue_many(
            conn,
            [
                {"job_type": job_type, "payload": payload, "organization": "acme"}
                for _ in range(count)
            ],
        )
    return [r.id for r in results]


def _states(dsn: str) -> dict[str, int]:
    return dict(queries.rows(dsn, "select state, count(*) from pgjobs.jobs group by state"))


def _settled(dsn: str) -> bool:
    """Nothing queued or running, read at one instant (two reads could see the
    jobs running, then back in the queue)."""
    states = _states(dsn)
    return not states.get("queued") and not states.get("running")


def _start(pool: workers.Workers, processes: int, **options: Any) -> workers.Worker:
    return pool.start(processes=processes, extra=("--import", fault_handlers.MODULE), **options)


def _all_gone(pids: list[int]) -> bool:
    return all(workers.pid_gone(pid) for pid in pids)


def test_a_failing_supervisor_stops_its_processes_and_exits_non_zero(
    dsn: str, wait_for: WaitFor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _prepare(dsn)
    ids = _enqueue(dsn, "lc.work", 40, seconds=0.2)
    trigger = tmp_path / "break"
    monkeypatch.setenv(fault_handlers.BREAK_FILE, str(trigger))
    with workers.workers(dsn) as pool:
        worker = _start(pool, processes=2, lease=2, grace=2)
        wait_for(lambda: queries.scalar(dsn, "select count(*) from lc_runs") >= 2, timeout=20)
        children = worker.children()
        assert len(children) == 2

        trigger.touch()
        assert worker.wait(20) == 1  # not a hang, not a clean exit
        wait_for(lambda: _all_gone(children), timeout=10, message="orphaned worker processes")
        assert worker.event("worker_failed") is not None
        assert "injected failure" in worker.output()

        monkeypatch.delenv(fault_handlers.BREAK_FILE)
        _start(pool, processes=2, lease=2)
        wait_for(
            lambda: _states(dsn) == {"completed": len(ids)},
            timeout=60,
            message="the jobs did not come back",
        )


def test_workers_of_a_killed_supervisor_give_back_what_they_never_started(
    dsn: str, wait_for: WaitFor
) -> None:
    """kill -9 of the supervisor at max_attempts=1: the processes stop as on
    SIGTERM (parent-death signal); no claimed job they never started is spent."""
    _prepare(dsn)
    ids = _enqueue(dsn, "lc.quick_once", 400, seconds=0.005)
    with workers.workers(dsn) as pool:
        worker = _start(pool, processes=2, lease=30, grace=5)
        wait_for(lambda: queries.scalar(dsn, "select count(*) from lc_runs") >= 40, timeout=30)
        children = worker.children()
        worker.proc.send_signal(signal.SIGKILL)  # the supervisor alone
        wait_for(lambda: _all_gone(children), timeout=10, message="orphaned worker processes")
        assert _states(dsn).get("running", 0) == 0  # nothing left for a lease rescue
        assert _states(dsn).get("completed", 0) < len(ids)  # the kill came mid-run

        _start(pool, processes=2, lease=30)
        wait_for(lambda: _states(dsn) == {"completed": len(ids)}, timeout=60)
    # Each job ran once, and its one attempt is the one that ran.
    assert (
        queries.rows(dsn, "select job_id from lc_runs group by job_id having count(*) <> 1") == []
    )
    assert queries.scalar(dsn, "select count(*) from pgjobs.jobs where attempt <> 1") == 0


def test_an_orphaned_process_stuck_in_a_job_settles_and_exits_after_the_grace(
    dsn: str, wait_for: WaitFor
) -> None:
    _prepare(dsn)
    (stuck,) = _enqueue(dsn, "lc.quick_once", 1, seconds=600)
    with workers.workers(dsn) as pool:
        worker = _start(pool, processes=1, lease=30, grace=1)
        wait_for(lambda: queries.scalar(dsn, "select count(*) from lc_runs") == 1, timeout=20)
        children = worker.children()
        worker.proc.send_signal(signal.SIGKILL)
        wait_for(lambda: _all_gone(children), timeout=10, message="an orphan ran on")
    # Its attempt ran and counts (max_attempts=1: dead), with the reason.
    assert queries.rows(
        dsn, "select state, attempt, last_error_class from pgjobs.jobs where id = %s", (stuck,)
    ) == [("dead", 1, "worker_lost")]


def test_a_process_killed_after_jobs_returned_counts_their_attempts(
    dsn: str, wait_for: WaitFor
) -> None:
    """Quick jobs' outcomes wait in a buffer; a job after them kills its own
    process. Those that ran count (dead at max_attempts=1, history says the
    process died after the job ran); those claimed with them but never started
    go back uncounted and run later, once."""
    _prepare(dsn)
    quick = {"job_type": "lc.quick_once", "organization": "acme"}
    kill = {"job_type": "lc.kill_own_process", "organization": "acme"}
    # A new process claims 1 job, then a few more at a time (how many depends
    # on how long the first took). A killer that is not first in its claim
    # follows a quick job whose outcome waits in the buffer: runs of 1 to 5
    # quick jobs before each killer make that so for any claim size but 1.
    specs: list[dict[str, Any]] = []
    for run in range(1, 6):
        specs += [quick] * run + [kill]
    with psycopg.connect(dsn) as conn:
        ids = [r.id for r in pgjobs.enqueue_many(conn, [*specs, *[quick] * 4])]
    killers = {job_id for job_id, spec in zip(ids, specs, strict=False) if spec is kill}
    with workers.workers(dsn) as pool:
        _start(pool, processes=1, lease=30)
        wait_for(
            lambda: _settled(dsn),
            timeout=60,
        )
    rows = queries.rows(
        dsn,
        """
        select j.id, j.state, j.attempt, j.last_error_class,
               (select count(*) from lc_runs r where r.job_id = j.id)
          from pgjobs.jobs j order by j.id""",
    )
    lost = [r[0] for r in rows if r[1] == "dead" and r[0] not in killers and r[4] == 1]
    assert lost, "no job had returned with its outcome unwritten: the test proves nothing"
    # A job two crashing processes held unstarted has its attempt counted
    # without running (job_return_crashed's guard against a job that kills
    # every process taking it): dead at max_attempts=1, never run, and it says so.
    held_twice = [r[0] for r in rows if r[1] == "dead" and r[0] not in killers and r[4] == 0]
    for job_id, state, attempt, error_class, runs in rows:
        assert runs == (0 if job_id in held_twice else 1), (job_id, runs)  # never twice
        assert attempt == 1, (job_id, attempt)
        if job_id in killers:
            assert (state, error_class) == ("dead", "crash")
        else:
            assert state == "completed" or (state, error_class) == ("dead", "crash")
    if held_twice:
        assert queries.scalar(
            dsn,
            "select bool_and(last_error like '%%again before starting it%%')"
            " from pgjobs.jobs where id = any(%s)",
            (held_twice,),
        )
    assert queries.rows(
        dsn, "select distinct last_error from pgjobs.jobs where id = any(%s)", (lost,)
    ) == [("the worker process died after the job ran, before its outcome was written",)]
    # History: no job that ran in a killed process is recorded as given back
    # unstarted (a job given back ran later, in another process).
    assert (
        queries.scalar(
            dsn,
            """
        select count(*) from pgjobs.job_events e
          join lc_runs r on r.job_id = e.job_id
         where e.from_state = 'running' and e.to_state = 'queued' and r.at < e.at
           and r.pid in (select pid from lc_runs where job_id = any(%s))""",
            (list(killers),),
        )
        == 0
    )


def test_no_process_of_a_stopped_worker_survives(dsn: str, wait_for: WaitFor) -> None:
    """SIGTERM ends the supervisor and every process it forked."""
    _prepare(dsn)
    with workers.workers(dsn) as pool:
        worker = _start(pool, processes=2, lease=2, grace=2)
        wait_for(lambda: len(worker.children()) == 2, timeout=20)
        tree = [p.pid for p in psutil.Process(worker.pid).children(recursive=True)]
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
        assert _all_gone(tree)
