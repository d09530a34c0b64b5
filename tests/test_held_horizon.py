"""Under a held xmin horizon (an idle transaction, a REPEATABLE READ reader) no
dead row version of jobs_active can go, nor its index entries be marked dead.
The worker's statements that name jobs by id (the completion, lease renewal,
progress) must then read those jobs' own entries, not every running row's
dead versions: the work per job stays the same however many jobs were done
since the snapshot (pgjobs.complete_many, 50_claim.sql; the rescuer's index,
20_tables.sql). The state relay reads the outbox rows it sends, not every row sent since
(pgjobs.state_relay). The claim's own bound is tests/test_claim_hints.py's."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgjobs.statements import Bound, Completed, Lease, run
from pgjobs.statements.leases import lease_renew
from pgjobs.statements.outcomes import complete_many
from pgjobs.statements.progress import progress
from pgjobs.statements.relay import state_relay
from tests.support import factories

Q = ["default"]


# Index entries and heap tuples of jobs_active read; pages of the outbox read.
ENTRIES = ("select sum(pg_stat_get_xact_tuples_returned(c.oid))::bigint from pg_class c"
           " where c.oid = 'pgjobs.jobs_active'::regclass or c.oid in"
           " (select indexrelid from pg_index where indrelid = 'pgjobs.jobs_active'::regclass)")
OUTBOX_PAGES = "select pg_stat_get_xact_blocks_fetched('pgjobs.state_outbox'::regclass)"


def measured(conn: psycopg.Connection[Any], stmt: Bound[Any], count: str) -> tuple[Any, int]:
    """What ``stmt`` returns, and how far it moved the backend's own counter
    ``count`` (taken inside one transaction)."""
    with conn.transaction():
        before = conn.execute(count).fetchone()
        result = run(conn, stmt)
        after = conn.execute(count).fetchone()
    assert before is not None and after is not None
    return result, int(after[0]) - int(before[0])


@pytest.mark.slow
def test_under_a_held_snapshot_completion_renewal_progress_and_relay_read_only_their_rows(
    dsn: str,
) -> None:
    batches, n = 300, 10
    with psycopg.connect(dsn, autocommit=True) as conn:
        factories.ensure_type(conn)
        # As a worker's session: its state events go to the relay's outbox.
        conn.execute("set pgjobs.relay_state_events = on")
        conn.execute("insert into pgjobs.jobs (job_type, run_at) select %s, now() - interval"
                     " '1 minute' + g * interval '1 microsecond' from generate_series(1, %s) g",
                     (factories.JOB_TYPE, batches * n))
        conn.execute("vacuum analyze pgjobs.jobs_active")
        with psycopg.connect(dsn) as idle:
            idle.execute("select pg_current_xact_id()")  # holds the xmin horizon
            reads: dict[str, list[int]] = {"complete": [], "renew": [], "progress": []}
            relay_pages: list[int] = []
            high = 0
            for _ in range(batches):
                jobs = [Lease(r[0], r[1]) for r in conn.execute(
                    "select id, lease_token from pgjobs.claim('w', %s, %s, 60)", (Q, n))]
                assert len(jobs) == n
                _, read = measured(conn, lease_renew.bind(worker="w", ids=[j.id for j in jobs],
                                                          lease_seconds=60), ENTRIES)
                reads["renew"].append(read)
                _, read = measured(conn, progress.bind(job_id=jobs[0].id,
                                                       lease_token=jobs[0].lease_token,
                                                       percent=50, message=None), ENTRIES)
                reads["progress"].append(read)
                done, read = measured(conn, complete_many.bind(
                    [(j, Completed(None, 1.0)) for j in jobs]), ENTRIES)
                reads["complete"].append(read)
                assert len(done) == n
                sent, pages = measured(conn, state_relay.bind(after=high, n=1000), OUTBOX_PAGES)
                relay_pages.append(pages)
                assert sent  # the claim's and the completion's events
                high = max(sent)
            # The dead versions are there: a fresh walk of the rescuer's index
            # steps over one per job claimed since the snapshot.
            with psycopg.connect(dsn, autocommit=True) as fresh:
                fresh.execute("set enable_seqscan = off")
                fresh.execute("set enable_bitmapscan = off")
                with fresh.transaction():
                    before = fresh.execute(ENTRIES).fetchone()
                    fresh.execute("select count(*) from pgjobs.jobs where state = 'running'"
                                  " and lease_expires_at < 'infinity'")
                    after = fresh.execute(ENTRIES).fetchone()
                assert before is not None and after is not None
                walked = int(after[0]) - int(before[0])
            assert walked >= (batches - 10) * n
            # A few entries per job (its row versions, in jobs_id_idx), at the
            # end as at the start.
            for statement, counts in reads.items():
                assert max(counts[-10:]) <= 5 * n, (statement, counts[:5], counts[-5:])
            # The relay's pass reads the pages of the rows it sends (two here).
            assert max(relay_pages[-10:]) <= 10, (relay_pages[:5], relay_pages[-5:])
