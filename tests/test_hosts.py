"""Leases, rescue, cancels and timeouts work across hosts: workers run on two
hosts (network namespaces of this machine with hostnames of their own,
bench/netns.py), each reaching a private Postgres over its own link and
address, as separate machines would.

Needs root and iproute2. Under CI=true a machine where the namespaces cannot
be made fails these tests; elsewhere they skip, saying why."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

import pgjobs
from bench import netns
from tests.support import queries, workers
from tests.support.databases import databases

pytestmark = pytest.mark.slow

WaitFor = Callable[..., Any]


class Network:
    """Two hosts, A and B, and the private server both reach."""

    def __init__(self, hosts: list[netns.Host], server: Any, template: str) -> None:
        self.a, self.b = hosts
        self.server = server
        self.template = template


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and no network namespaces: {reason}")
    pytest.skip(f"no network namespaces: {reason}")


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    from pgjobs.migrate import migrate

    with contextlib.ExitStack() as stack:
        try:
            hosts = stack.enter_context(netns.hosts(2))
        except netns.NetnsError as exc:  # not root, no iproute2, no permission
            _unavailable(str(exc))
        server = stack.enter_context(netns.server_for(hosts))
        template = databases.create(server.dsn, "hosts_tpl")
        with psycopg.connect(template, autocommit=True) as conn:
            migrate(conn)
        name = str(conninfo_to_dict(template)["dbname"])
        yield Network(hosts, server, name)
        databases.drop(name)


@pytest.fixture
def local(network: Network) -> Iterator[str]:
    """A migrated database of the test's own on the private server, reached
    from the machine itself (the test's own checks)."""
    with databases.database(network.server.dsn, template=network.template) as dsn:
        workers.prepare(dsn)
        yield dsn


def _on(host: netns.Host, network: Network, local: str) -> str:
    """The test database's DSN as ``host`` reaches it: over its own link."""
    return host.dsn(network.server, str(conninfo_to_dict(local)["dbname"]))


def _start(pool: workers.Workers, host: netns.Host, network: Network, local: str,
           **options: Any) -> workers.Worker:
    return pool.start_on(host.command, _on(host, network, local), **options)


def _first_run(dsn: str, job_id: int) -> tuple[int, int] | None:
    """(attempt, pid) of the job's latest started attempt."""
    row = queries.rows(
        dsn, "select attempt, pid from lc_runs where job_id = %s order by attempt desc limit 1",
        (job_id,))
    return (int(row[0][0]), int(row[0][1])) if row else None


def _state(dsn: str, job_id: int) -> str:
    return str(queries.scalar(dsn, "select state from pgjobs.jobs where id = %s", (job_id,)))


def _ticks(dsn: str, job_id: int) -> int | None:
    n = queries.scalar(dsn, "select n from lc_ticks where job_id = %s", (job_id,))
    return None if n is None else int(n)


def _client_addresses(dsn: str) -> set[str]:
    return {str(a) for (a,) in queries.rows(
        dsn, "select distinct host(client_addr) from pg_stat_activity"
             " where datname = current_database() and client_addr is not null")}


def test_a_host_killed_mid_job_is_rescued_by_another_host(
    network: Network, local: str, wait_for: WaitFor
) -> None:
    with psycopg.connect(local) as conn:
        job = pgjobs.enqueue(conn, "lc.fenced", {"first_attempt_seconds": 60},
                             organization="acme").id
    with workers.workers(local) as pool:
        a = _start(pool, network.a, network, local, processes=1, lease=2)
        wait_for(lambda: _first_run(local, job), timeout=30, message="host A never started it")
        b = _start(pool, network.b, network, local, processes=1, lease=2)
        # Both hosts hold sessions, each from its own address, none from the machine's.
        wait_for(lambda: {network.a.address, network.b.address} <= _client_addresses(local),
                 timeout=30, message="host B never connected")
        run = _first_run(local, job)
        assert run is not None and run[0] == 1 and run[1] in a.children()
        assert str(queries.scalar(local, "select worker from pgjobs.jobs where id = %s",
                                  (job,))).startswith(f"{network.a.hostname}/")

        a.signal_all(signal.SIGKILL)  # the whole host's worker: supervisor and process
        wait_for(lambda: _state(local, job) == "completed", timeout=30,
                 message="host B did not rescue and finish the job")
        b_pids = set(b.children())

    assert queries.rows(local, "select state, attempt, (result->>'attempt')::int"
                               " from pgjobs.jobs where id = %s", (job,)) == [("completed", 2, 2)]
    runs = queries.rows(local, "select attempt, pid from lc_runs where job_id = %s order by 1",
                        (job,))
    assert [r[0] for r in runs] == [1, 2] and runs[1][1] in b_pids
    # The killed attempt's write through ctx.conn never committed; the second did.
    assert queries.rows(local, "select attempt from lc_done where job_id = %s", (job,)) == [(2,)]
    events = queries.rows(
        local,
        "select attempt, from_state, to_state, error_class, split_part(worker, '/', 1)"
        "  from pgjobs.job_events where job_id = %s and from_state = 'running' order by id",
        (job,))
    assert events == [
        (1, "running", "retrying", "lease_expired", network.a.hostname),
        (2, "running", "completed", None, network.b.hostname),
    ]


def test_a_cancel_from_host_b_stops_a_job_running_on_host_a(
    network: Network, local: str, wait_for: WaitFor
) -> None:
    with psycopg.connect(local) as conn:
        job = pgjobs.enqueue(conn, "lc.stubborn", organization="acme").id
    with workers.workers(local) as pool:
        a = _start(pool, network.a, network, local, processes=1, lease=5, cancel_grace=0.5)
        wait_for(lambda: (_ticks(local, job) or 0) > 2, timeout=30, message="never got going")
        run = _first_run(local, job)
        assert run is not None and run[1] in a.children()

        cli = subprocess.run(
            network.b.command([sys.executable, "-m", "pgjobs.cli", "cancel", str(job),
                               "--dsn", _on(network.b, network, local)]),
            cwd=workers.ROOT, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli
        wait_for(lambda: _state(local, job) == "canceled", timeout=15,
                 message="the cancel from host B did not end the job on host A")
        ticks = _ticks(local, job)
        assert queries.holds_for(lambda: _ticks(local, job) == ticks, 0.5), "still running"
        wait_for(lambda: workers.pid_gone(run[1]), timeout=5, message="process not stopped")

    assert queries.rows(local, "select state, attempt, canceled_by from pgjobs.jobs") == [
        ("canceled", 1, "postgres")]
    assert queries.rows(
        local, "select split_part(worker, '/', 1), to_state from pgjobs.job_events"
               " where job_id = %s and from_state = 'running'", (job,)) == [
        (network.a.hostname, "canceled")]


def test_a_hard_timeout_on_host_a_while_host_b_works(
    network: Network, local: str, wait_for: WaitFor
) -> None:
    with psycopg.connect(local) as conn:
        work = [r.id for r in pgjobs.enqueue_many(
            conn, [{"job_type": "lc.work", "payload": {"seconds": 0.2, "n": i},
                    "organization": "acme"} for i in range(100)])]
        # Host A alone serves queue lc_a: the spinning job can only run there.
        spin = pgjobs.enqueue(conn, "lc.spin", organization="acme", queue="lc_a").id
    with workers.workers(local) as pool:
        b = _start(pool, network.b, network, local, processes=1, lease=5)
        wait_for(lambda: queries.scalar(local, "select count(*) from lc_runs") > 0,
                 timeout=30, message="host B never started working")
        a = _start(pool, network.a, network, local, processes=1, lease=5, queues="lc_a")
        wait_for(lambda: _state(local, spin) == "dead", timeout=30,
                 message="the spinning job on host A was not timed out")
        run = _first_run(local, spin)
        assert run is not None
        ticks = _ticks(local, spin)
        assert queries.holds_for(lambda: _ticks(local, spin) == ticks, 0.5), "still spinning"
        wait_for(lambda: workers.pid_gone(run[1]), timeout=5, message="process not killed")
        b_pids = set(b.children())
        wait_for(a.children, timeout=15, message="host A's worker did not replace its process")

    assert queries.rows(
        local, "select j.state, e.attempt, j.last_error_class, split_part(e.worker, '/', 1)"
               "  from pgjobs.job_events e join pgjobs.jobs j on j.id = e.job_id"
               " where j.id = %s and e.from_state = 'running'",
        (spin,)) == [("dead", 1, "timeout", network.a.hostname)]
    # Host B kept working through it: attempts it started while the job spun on A.
    during = queries.scalar(
        local, "select count(*) from lc_runs r, pgjobs.jobs j"
               " where j.id = %s and r.job_id <> j.id and r.pid = any(%s)"
               "   and r.at between j.started_at and j.finished_at", (spin, list(b_pids)))
    assert during > 0
    # And none of its jobs failed: each is completed, or still queued/running.
    states = dict(queries.rows(local, "select state, count(*) from pgjobs.jobs"
                                      " where id = any(%s) group by 1", (work,)))
    assert set(states) <= {"completed", "queued", "running"} and states.get("completed", 0) > 0
