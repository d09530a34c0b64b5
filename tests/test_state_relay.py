"""State events of the worker's sessions go through the relay:
never a NOTIFY from their own commits, every event delivered by the relay as
the same pgjobs_state payload, once, whatever order the writers commit in."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs import registry
from pgjobs.worker.relay import StateRelay
from tests.support import (
    factories,
    handlers,  # noqa: F401 (registers the t.* job types)
    queries,
    workers,
)

RELAYED = "select set_config('pgjobs.relay_state_events', 'on', false)"


@pytest.fixture
def listener(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("listen pgjobs_state")
        yield conn


def received(conn: psycopg.Connection[Any], timeout: float = 0.5) -> list[dict[str, Any]]:
    """Every pgjobs_state event that arrives within ``timeout`` of the last one."""
    events = []
    while True:
        got = False
        for note in conn.notifies(timeout=timeout, stop_after=1):
            got = True
            events.append(json.loads(note.payload))
        if not got:
            return events


def job_in(dsn: str, state: str = "queued") -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        factories.ensure_type(conn)
        job_id = factories.insert_job(conn, organization="acme")
        for step in factories.PATHS[state]:
            factories.move(conn, job_id, step)
    return job_id


def test_a_relayed_session_notifies_nothing_and_the_relay_sends_the_same_events_once(
    dsn: str, listener: psycopg.Connection[Any]
) -> None:
    job_id = job_in(dsn)
    with psycopg.connect(dsn, autocommit=True) as direct:
        factories.move(direct, job_id, "running")
    direct_events = received(listener)
    assert [(e["id"], e["state"], e["attempt"]) for e in direct_events] == [(job_id, "running", 1)]

    with psycopg.connect(dsn, autocommit=True) as worker:
        worker.execute(RELAYED)
        factories.move(worker, job_id, "completed")
        assert received(listener) == []  # nothing from the worker's own commit
        assert queries.scalar(dsn, "select count(*) from pgjobs.state_outbox") == 1

        relay = StateRelay()
        assert relay.step(worker) == 1
    events = received(listener)
    assert events == [{"id": job_id, "organization": "acme", "job_type": factories.JOB_TYPE,
                       "state": "completed", "attempt": 1}]
    assert set(events[0]) == set(direct_events[0])  # the payload has the same form
    assert queries.scalar(dsn, "select count(*) from pgjobs.state_outbox") == 0
    with psycopg.connect(dsn, autocommit=True) as again:
        assert StateRelay().step(again) == 0  # sent once: a fresh relay finds nothing
    assert received(listener) == []


def test_a_row_committed_after_a_later_one_is_still_relayed(
    dsn: str, listener: psycopg.Connection[Any]
) -> None:
    """Outbox ids are drawn before the commit: id 1 may commit after id 2 was sent."""
    slow, fast = job_in(dsn), job_in(dsn)
    relay = StateRelay()
    with psycopg.connect(dsn) as late, psycopg.connect(dsn, autocommit=True) as early:
        late.execute(RELAYED)
        factories.move(late, slow, "running")  # outbox id drawn, not committed
        early.execute(RELAYED)
        factories.move(early, fast, "running")  # a higher id, committed
        with psycopg.connect(dsn, autocommit=True) as relay_conn:
            assert relay.step(relay_conn) == 1
            assert [e["id"] for e in received(listener)] == [fast]
            assert relay.pending  # it remembers the id it skipped
            late.commit()
            assert relay.step(relay_conn) == 1
    assert [e["id"] for e in received(listener)] == [slow]
    assert not relay.pending


def test_a_rolled_back_statement_leaves_no_event_and_its_gap_is_given_up(
    dsn: str, listener: psycopg.Connection[Any]
) -> None:
    first, second = job_in(dsn), job_in(dsn)
    now = [0.0]
    relay = StateRelay(clock=lambda: now[0])
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(RELAYED)
        factories.move(conn, first, "running")
        relay.step(conn)
        with conn.transaction(force_rollback=True):
            factories.move(conn, second, "canceled")
        factories.move(conn, second, "running")
        relay.step(conn)
        assert len(relay.pending) == 1
        now[0] += 31
        relay.step(conn)
        assert relay.pending == {}
    assert [(e["id"], e["state"]) for e in received(listener)] == [
        (first, "running"), (second, "running")]


def test_only_one_session_relays_at_a_time(dsn: str) -> None:
    job_id = job_in(dsn)
    with psycopg.connect(dsn, autocommit=True) as worker:
        worker.execute(RELAYED)
        factories.move(worker, job_id, "running")
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as other:
        holder.execute("select pgjobs.state_relay(0, 0)")  # takes the lock, sends nothing
        assert StateRelay().step(other) == 0
        holder.rollback()
        assert StateRelay().step(other) == 1


def test_applications_may_neither_read_nor_write_the_outbox(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("set role pgjobs_app")
        for statement in ("select * from pgjobs.state_outbox",
                          "insert into pgjobs.state_outbox (events) values ('{}')",
                          "select pgjobs.state_relay(0, 10)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


@pytest.mark.slow
def test_a_worker_run_reaches_listeners_with_every_state_change_and_leaves_no_outbox(
    dsn: str, listener: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        registry.sync(conn)
        ids = [r.id for r in pgjobs.enqueue_many(conn, [{"job_type": "t.noop"}] * 50)]
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def follow() -> None:
        for note in listener.notifies(timeout=30):
            seen.append(json.loads(note.payload))
            if sum(e["state"] == "completed" for e in seen) == len(ids):
                done.set()
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    with workers.workers(dsn) as pool:
        worker = pool.start(processes=2, extra=("--import", "tests.support.handlers",
                                                "--queues", "default", "--exit-when-idle"))
        assert worker.wait(60) == 0, worker.output()[-3000:]
        states = queries.rows(dsn, "select state, count(*) from pgjobs.jobs group by 1")
        assert states == [("completed", len(ids))], worker.output()[-3000:]
    thread.join(30)
    assert done.is_set(), f"{len(seen)} events"
    by_job = {i: [e["state"] for e in seen if e["id"] == i] for i in ids}
    assert all(states == ["running", "completed"] for states in by_job.values()), by_job
    assert queries.scalar(dsn, "select count(*) from pgjobs.state_outbox") == 0
