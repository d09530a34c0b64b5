"""The worker vacuums the partitions of finished jobs and of history once
enough rows came into them, where autovacuum will not: rows there are only
inserted, so no dead tuple ever calls for a vacuum, and until one sets their
pages all-visible a count(*) of the jobs reads every finished job's page.
Only a worker that may vacuum them (their owner, a superuser) does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import structlog

from pgjobs.worker.maintenance import Vacuum
from tests.support import clients, factories

FINISHED = 300


def _finished_partition(conn: psycopg.Connection[Any]) -> str:
    """Where the finished jobs went (today's partition), its autovacuum off
    as the worker's test wants it whatever the server's setting."""
    row = conn.execute(
        "select tableoid::regclass::text from pgjobs.jobs where state = 'completed' limit 1"
    ).fetchone()
    assert row is not None
    conn.execute(f"alter table {row[0]} set (autovacuum_enabled = false)")  # a catalog name
    return str(row[0])


def _stats(conn: psycopg.Connection[Any], table: str) -> tuple[int, int]:
    """The partition's rows inserted since its last vacuum and its vacuums."""
    row = conn.execute(
        "select n_ins_since_vacuum, vacuum_count from pg_stat_user_tables"
        " where relid = %s::regclass",
        (table,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _check(conn: psycopg.Connection[Any], vacuum: Vacuum) -> bool:
    vacuum.next_check = 0.0  # as if a second had passed
    return vacuum.if_due(conn)


@pytest.mark.slow
def test_the_worker_vacuums_a_finished_partition_after_enough_inserts(
    dsn: str, server_dsn: str, wait_for: Callable[..., Any]
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        factories.ensure_type(conn)
        conn.execute(
            "insert into pgjobs.jobs (job_type) select %s from generate_series(1, %s)",
            (factories.JOB_TYPE, FINISHED),
        )
        conn.execute(
            "update pgjobs.jobs set state = 'running', attempt = 1,"
            " lease_token = nextval('pgjobs.lease_token_seq')"
        )
        conn.execute(
            "update pgjobs.jobs set state = 'completed', finished_at = now()"
        )  # each moves into today's partition of finished jobs
        partition = _finished_partition(conn)
        wait_for(lambda: _stats(conn, partition)[0] >= FINISHED, timeout=20)
        log = structlog.get_logger("test")

        with (
            clients.logins(server_dsn, "vacfin") as who,
            psycopg.connect(clients.as_user(dsn, who.worker), autocommit=True) as stranger,
        ):
            # A pgjobs_worker that does not own the tables may not vacuum them.
            assert not _check(stranger, Vacuum(log, "test/stranger", inserts=FINISHED))
        assert _stats(conn, partition) == (FINISHED, 0)

        # Below the threshold (history has two rows a job): nothing to do.
        assert not _check(conn, Vacuum(log, "test/owner", inserts=3 * FINISHED))
        owner = Vacuum(log, "test/owner", inserts=FINISHED)
        assert _check(conn, owner)  # the partition most behind first: history's
        assert _check(conn, owner)
        wait_for(lambda: _stats(conn, partition) == (0, 1), timeout=20)
        relallvisible = conn.execute(
            "select relallvisible from pg_class where oid = %s::regclass", (partition,)
        ).fetchone()
        assert relallvisible is not None and relallvisible[0] > 0
