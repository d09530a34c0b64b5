"""A job that cannot start is a failed attempt, not a crash.

Each poison row is planted as a row from before the database enforced its
limits would be (the limits' constraints dropped in the test's own database,
triggers skipped): the worker must survive whatever a row holds. Workers are
real processes running as a pgjobs_worker login.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgjobs
from pgjobs import registry
from tests.support import factories, queries, trust_handlers, workers
from tests.support.clients import Logins, as_user, logins

WaitFor = Callable[..., Any]


@pytest.fixture(scope="module")
def roles(server_dsn: str) -> Iterator[Logins]:
    with logins(server_dsn, "wts") as made:
        yield made


def _plant(dsn: str, job_id: int, column: str, value: str) -> None:
    """Sets one column of a job to ``value`` (SQL text, cast by the column) as
    no limit would let anyone write it today."""
    with psycopg.connect(dsn) as conn:
        checks = conn.execute(
            "select conname from pg_constraint where conrelid = 'pgjobs.jobs'::regclass"
            "   and contype = 'c' and pg_get_constraintdef(oid) ~ %s",
            (column,),
        ).fetchall()
        for (name,) in checks:
            conn.execute(
                sql.SQL("alter table pgjobs.jobs drop constraint {}").format(sql.Identifier(name))
            )
        conn.execute("set local session_replication_role = replica")
        conn.execute(
            sql.SQL("update pgjobs.jobs set {} = %s where id = %s").format(sql.Identifier(column)),
            (value, job_id),
        )


def _args(processes: int = 1) -> list[str]:
    return ["--import", trust_handlers.MODULE, "--queues", trust_handlers.QUEUE,
            "--processes", str(processes), "--lease", "5", "--poll", "0.5"]  # fmt: skip


def _rows(dsn: str, ids: list[int]) -> list[tuple[Any, ...]]:
    return queries.rows(
        dsn,
        "select state, attempt, last_error_class from pgjobs.jobs where id = any(%s) order by id",
        (ids,),
    )


def _all_ended(dsn: str, ids: list[int]) -> bool:
    states = {state for state, _, _ in _rows(dsn, ids)}
    return states <= {"completed", "dead"}


def _deaths(worker: workers.Worker) -> list[dict[str, Any]]:
    return [e for e in worker.events() if e.get("event") == "worker_process_died"]


@pytest.mark.slow
def test_a_payload_the_worker_cannot_decode_is_a_failed_attempt(
    dsn: str, roles: Logins, wait_for: WaitFor
) -> None:
    """A 5,000-digit number and a payload nested 3,000 deep: the old worker
    died decoding the claim and the job came back uncounted, forever. Now each
    is an attempt that fails with undecodable_payload until the job is dead,
    and the same process runs the jobs around it."""
    trust_handlers.prepare(dsn)
    with psycopg.connect(dsn) as conn:
        first = [pgjobs.enqueue(conn, "wt.noop", organization="acme").id for _ in range(5)]
        poison = [pgjobs.enqueue(conn, "wt.noop", organization="acme").id for _ in range(2)]
        last = [pgjobs.enqueue(conn, "wt.noop", organization="globex").id for _ in range(5)]
    _plant(dsn, poison[0], "payload", '{"n": ' + "7" * 5000 + "}")
    _plant(dsn, poison[1], "payload", '{"a": ' * 3000 + "1" + "}" * 3000)
    with workers.workers(as_user(dsn, roles.worker)) as pool:
        worker = pool.start_args(*_args())
        wait_for(lambda: _all_ended(dsn, first + poison + last), timeout=60)
        assert _deaths(worker) == []
    assert _rows(dsn, first + last) == [("completed", 1, None)] * 10
    assert _rows(dsn, poison) == [("dead", 2, "undecodable_payload")] * 2


@pytest.mark.slow
def test_a_job_whose_transaction_cannot_be_set_up_fails_without_poisoning_the_next(
    dsn: str, roles: Logins, wait_for: WaitFor
) -> None:
    """timeout_seconds = 2,147,483,000 makes the job's statement_timeout
    setting fail: the old worker left its job session in an aborted
    transaction and every later job of that process failed. Now that attempt
    fails with job_setup_failed, the session is replaced, and the next jobs
    (all writing through ctx.conn, in the same single process) complete."""
    trust_handlers.prepare(dsn)
    with psycopg.connect(dsn) as conn:
        poison = pgjobs.enqueue(conn, "wt.uses_conn", organization="acme").id
        after = [pgjobs.enqueue(conn, "wt.uses_conn", organization="globex").id for _ in range(8)]
    _plant(dsn, poison, "timeout_seconds", "2147483000")
    with workers.workers(as_user(dsn, roles.worker)) as pool:
        worker = pool.start_args(*_args(processes=1))
        wait_for(lambda: _all_ended(dsn, [poison, *after]), timeout=60)
        assert _deaths(worker) == []
    assert _rows(dsn, [poison]) == [("dead", 2, "job_setup_failed")]
    assert _rows(dsn, after) == [("completed", 1, None)] * 8
    written = queries.scalar(dsn, "select count(*) from wt_done where job_id = any(%s)", (after,))
    assert written == 8


@pytest.mark.slow
def test_a_job_held_by_processes_that_keep_dying_has_its_attempts_counted(
    dsn: str, roles: Logins, wait_for: WaitFor
) -> None:
    """A process that dies holding a job it has not started gives it back
    uncounted once (it may be innocent); when a dying process held it before,
    the attempt counts, so a job that kills every process taking it ends.
    The test claims the job in the worker process's name (as a claim the
    process died reading would have), then kills that process."""
    trust_handlers.prepare(dsn)
    with psycopg.connect(dsn) as conn:
        # A type the worker has no handler for: only the test claims it.
        spec = registry.JobType(
            name="wt.held", handler="os:getpid", queue=trust_handlers.QUEUE, max_attempts=2
        )
        registry.upsert(conn, spec)
        conn.commit()
        held = pgjobs.enqueue(conn, "wt.held", organization="acme").id
    seen = []
    with workers.workers(as_user(dsn, roles.worker)) as pool:
        worker = pool.start_args(*_args(processes=1))
        for _ in range(3):
            child = wait_for(lambda: worker.children(), timeout=20)[0]
            name = f"{socket.gethostname()}/{child}"
            with psycopg.connect(dsn, autocommit=True) as conn:
                claimed = conn.execute(
                    "select id from pgjobs.claim(%s, array['wt'], 1, 60, now() + interval '1h')",
                    (name,),
                ).fetchall()
            assert claimed == [(held,)]
            os.kill(child, signal.SIGKILL)
            wait_for(lambda: _rows(dsn, [held])[0][0] != "running", timeout=20)
            seen.append(_rows(dsn, [held])[0])
            if seen[-1][0] == "dead":
                break
    assert seen == [
        ("queued", 0, "crash_unstarted"),  # the first time: given back uncounted
        ("retrying", 1, "crash"),  # held by a dying process again: counted
        ("dead", 2, "crash"),  # and once more: its attempts are spent
    ]


def test_testing_drain_fails_a_job_whose_handler_is_not_registered(
    conn: psycopg.Connection[Any],
) -> None:
    """pgjobs.testing finds handlers as the worker does: in the registry only.
    The stored path (tests.support.handlers:noop) is not imported."""
    factories.ensure_type(conn, "t.unregistered")
    job = pgjobs.enqueue(conn, "t.unregistered", {})
    ended = pgjobs.testing.drain(conn, queues=["default"], registry=registry.Registry())
    assert ended == {"retrying": 1}
    row = conn.execute(
        "select state, attempt, last_error_class from pgjobs.jobs where id = %s", (job.id,)
    ).fetchone()
    assert row == {"state": "retrying", "attempt": 1, "last_error_class": "handler_not_registered"}
