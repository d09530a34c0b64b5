"""Notifications are hints, never commands.

Any role may NOTIFY on any channel with any payload. Each test forges from a
login role with no grants at all, against real workers that run as a
pgjobs_worker login, as a deployment has them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgjobs
from tests.support import queries, trust_handlers, workers
from tests.support.clients import Logins, as_user, logins

pytestmark = pytest.mark.slow

WaitFor = Callable[..., Any]


@pytest.fixture(scope="module")
def roles(server_dsn: str) -> Iterator[Logins]:
    with logins(server_dsn, "wtn") as made:
        yield made


def _worker_args(processes: int = 2) -> list[str]:
    return [
        "--import", trust_handlers.MODULE, "--queues", trust_handlers.QUEUE,
        "--processes", str(processes), "--lease", "5", "--cancel-grace", "0.5", "--poll", "0.5",
    ]  # fmt: skip


def _forge(dsn: str, nobody: str, notes: list[tuple[str, str]]) -> None:
    """pg_notify as the no-grant role: (channel, payload) pairs."""
    with psycopg.connect(as_user(dsn, nobody), autocommit=True) as conn:
        for channel, payload in notes:
            conn.execute("select pg_notify(%s, %s)", (channel, payload))


def _job(dsn: str, job_id: int) -> tuple[Any, ...]:
    row = queries.rows(
        dsn,
        "select state, attempt, canceled_by, cancel_requested_at, last_error_class"
        "  from pgjobs.jobs where id = %s",
        (job_id,),
    )
    return row[0]


def _started(dsn: str, job_id: int) -> bool:
    return bool(queries.scalar(dsn, "select count(*) from wt_runs where job_id = %s", (job_id,)))


def _open_gate(dsn: str, job_id: int) -> None:
    queries.scalar(dsn, "insert into wt_gate values (%s) returning job_id", (job_id,))


def test_forged_cancel_of_another_organizations_running_job_changes_nothing(
    dsn: str, roles: Logins, wait_for: WaitFor
) -> None:
    """The reproduction: `select pg_notify('pgjobs_cancel', '<id>')` by a role
    with no grants cancelled (then killed) another organization's running job.
    Now the supervisor reads the row under the lease first: the job runs on
    and completes normally, while a real pgjobs.cancel still cancels."""
    trust_handlers.prepare(dsn)
    with psycopg.connect(dsn) as conn:
        victim = pgjobs.enqueue(conn, "wt.gated", organization="acme").id
        genuine = pgjobs.enqueue(conn, "wt.gated", organization="acme").id
    with workers.workers(as_user(dsn, roles.worker)) as pool:
        pool.start_args(*_worker_args(processes=2))
        wait_for(lambda: _started(dsn, victim) and _started(dsn, genuine), timeout=20)
        forged = str(victim)
        _forge(dsn, roles.nobody, [("pgjobs_cancel", forged)] * 5)
        # A delivered cancel would end it within the 0.5 s grace (the handler
        # checks every 20 ms); the sweep runs every second.
        assert queries.holds_for(lambda: _job(dsn, victim)[0] == "running", 2.5), (
            "a forged NOTIFY canceled the job"
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert pgjobs.cancel(conn, genuine) == "running"
        wait_for(lambda: _job(dsn, genuine)[0] == "canceled", timeout=10)
        _open_gate(dsn, victim)
        wait_for(lambda: _job(dsn, victim)[0] == "completed", timeout=10)
    assert _job(dsn, victim) == ("completed", 1, None, None, None)
    assert _job(dsn, genuine)[:3] == ("canceled", 1, "postgres")


# What a forger may send on each channel: no JSON, wrong types, numbers no
# integer type holds, nesting no parser follows, ids of jobs that exist.
_MALFORMED = [
    "", " ", "abc", "-1", "0", "1.5", "1e3", " 7", "\u0661\u0662", "9223372036854775808",
    "9" * 5000, "[" * 3000, '{"id": ' + "9" * 5000 + "}", '{"id": "1"}', '{"id": [1]}',
    '{"id": true}', "null", "[]", "x" * 7990,
]


def _forgeries(job_ids: list[int]) -> list[tuple[str, str]]:
    notes = []
    for channel in ("pgjobs_cancel", "pgjobs_state", "pgjobs_progress", "pgjobs_wakeup"):
        notes += [(channel, payload) for payload in _MALFORMED]
    for job_id in job_ids:
        notes.append(("pgjobs_cancel", str(job_id)))
        notes.append(("pgjobs_wakeup", trust_handlers.QUEUE))
        for state in ("completed", "dead", "canceled"):
            event = {"id": job_id, "organization": "acme", "job_type": "wt.noop",
                     "state": state, "attempt": 1}  # fmt: skip
            notes.append(("pgjobs_state", json.dumps(event)))
        notes.append(("pgjobs_progress", json.dumps(
            {"id": job_id, "organization": "acme", "progress": 100, "state": "running"})))
    return notes


def test_malformed_and_forged_messages_on_every_channel_while_a_worker_drains(
    dsn: str, roles: Logins, wait_for: WaitFor
) -> None:
    """Forgeries on pgjobs_cancel, pgjobs_state, pgjobs_progress and the
    wake-up channel, sent while a worker drains 100 jobs and runs a gated
    one: every job completes at its first attempt, no worker process dies, and
    the gated job's row is untouched by them."""
    trust_handlers.prepare(dsn)
    with psycopg.connect(dsn) as conn:
        gated = pgjobs.enqueue(conn, "wt.gated", organization="acme").id
    with workers.workers(as_user(dsn, roles.worker)) as pool:
        worker = pool.start_args(*_worker_args(processes=2))
        wait_for(lambda: _started(dsn, gated), timeout=20)
        children = set(worker.children())
        with psycopg.connect(dsn) as conn:
            drained = [
                j.id
                for j in pgjobs.enqueue_many(
                    conn, [{"job_type": "wt.noop", "organization": "globex"}] * 100
                )
            ]
        for _ in range(3):
            _forge(dsn, roles.nobody, _forgeries([gated, *drained[:20]]))
        wait_for(
            lambda: queries.scalar(
                dsn, "select count(*) from pgjobs.jobs where state = 'completed'"
            ) == len(drained),
            timeout=60,
            message="the worker did not drain its jobs under forged messages",
        )
        assert _job(dsn, gated) == ("running", 1, None, None, None)
        assert set(worker.children()) == children, "a worker process died"
        _open_gate(dsn, gated)
        wait_for(lambda: _job(dsn, gated)[0] == "completed", timeout=10)
        assert worker.proc.poll() is None
        died = [e for e in worker.events() if e.get("event") == "worker_process_died"]
        assert died == []
    attempts = queries.rows(
        dsn, "select state, attempt, count(*) from pgjobs.jobs group by 1, 2 order by 1, 2"
    )
    assert attempts == [("completed", 1, 101)]


def _subscribe_into(events: list[dict[str, Any]], dsn: str, job_id: int, seconds: float) -> None:
    for event in pgjobs.subscribe(dsn, job_id=job_id, timeout=seconds):
        events.append(event)


def test_subscribe_and_listen_do_not_present_a_forged_end_as_fact(
    dsn: str, roles: Logins, wait_for: WaitFor
) -> None:
    """A forged "completed" event for a queued job is dropped by subscribe()
    and `pgjobs listen` (the row says otherwise); malformed payloads are
    dropped; a forged progress event comes through marked as a hint; the real
    end of the job comes through read back from the row."""
    trust_handlers.prepare(dsn)
    with psycopg.connect(dsn) as conn:
        job_id = pgjobs.enqueue(conn, "wt.noop", organization="acme").id
    admin = as_user(dsn, roles.admin)
    events: list[dict[str, Any]] = []
    printed: list[dict[str, Any]] = []
    listen = subprocess.Popen(
        [sys.executable, "-m", "pgjobs.cli", "listen", "--dsn", admin, "--job", str(job_id),
         "--timeout", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert listen.stdout is not None
    lines = listen.stdout
    reader = threading.Thread(target=lambda: printed.extend(json.loads(x) for x in lines))
    thread = threading.Thread(target=_subscribe_into, args=(events, admin, job_id, 5))
    reader.start()
    thread.start()
    wait_for(lambda: _listeners(dsn) >= 2, timeout=20, message="subscribers never LISTENed")
    _forge(dsn, roles.nobody, _forgeries([job_id]))
    # The forged progress comes last: once both have it, they have read the forged ends.
    wait_for(lambda: any(e["event"] == "progress" for e in events), timeout=10)
    wait_for(lambda: any(e["event"] == "progress" for e in printed), timeout=10)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert pgjobs.cancel(conn, job_id) == "canceled"  # a real end, sent by pgjobs
    thread.join(30)
    reader.join(30)
    assert listen.wait(30) == 0, listen.stderr.read() if listen.stderr else ""
    for seen in (events, printed):
        ends = [e for e in seen if e["event"] == "state"]
        assert ends == [
            {"event": "state", "id": job_id, "organization": "acme", "job_type": "wt.noop",
             "state": "canceled", "attempt": 0, "hint": False}
        ]  # fmt: skip
        assert [e["hint"] for e in seen if e["event"] == "progress"] == [True]


def _listeners(dsn: str) -> int:
    return int(
        queries.scalar(
            dsn,
            "select count(*) from pg_stat_activity where datname = current_database()"
            " and query ilike 'listen pgjobs_progress%%'",
        )
    )


@pytest.mark.parametrize("payload", _MALFORMED)
def test_the_dashboards_listener_survives_every_malformed_payload(payload: str) -> None:
    """The web app's LISTEN thread reads each payload as a hint of whom to
    ring; a payload nested past the parser's recursion limit used to raise
    out of that thread and end the dashboard's live updates."""
    from pgjobs.web.sse import Listener

    Listener("postgresql://unused")._note(payload)
