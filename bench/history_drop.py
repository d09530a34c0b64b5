"""How long retention takes to drop one period of finished jobs with their
history (pgjobs.partition_drop_oldest), on the schema of the checkout it runs
from.

    python -m bench.history_drop seed DSN [--jobs N] [--kept N]
    python -m bench.history_drop drop DSN

``seed`` installs the schema into an empty database and fills it as a queue
that ran for a while would have: ``--jobs`` completed jobs finished on one
day four days ago, with the two history rows each that running them leaves
(claim, completion), and ``--kept`` jobs that ran across that day's end
(enqueued and claimed in it, completed the next day), which retention keeps.
Rows go in server-side with triggers off, as ``bench/systems/pgjobs.py``
seeds. ``drop`` times one call of ``partition_drop_oldest`` with a cut-off
three days ago (the old day is past it, the next one is not) and its commit,
and prints the seconds and the jobs it dropped. Seed once into a template
database, clone it per measurement (``createdb -T``) and alternate the
checkouts.
"""

from __future__ import annotations

import argparse
import time

import psycopg

from pgjobs.migrate import migrate

_SEED = """
with d as (select date_bin('1 day', now() - interval '4 days',
                           timestamptz '2000-01-03 00:00:00+00') as day)
insert into pgjobs.jobs (id, job_type, queue, priority, payload, state, run_at, attempt,
                         max_attempts, timeout_seconds, created_at, started_at, finished_at,
                         worker, lease_token, last_duration_ms, created_by)
select g, 'bench.noop', 'default', 2, '{}', 'completed', t - interval '2 ms', 1, 1, 300,
       t - interval '2 ms', t - interval '1 ms', t + f, 'bench/seed', 1, 0.5, 'bench'
  from d, generate_series(1, %(total)s::bigint) g,
       lateral (select d.day + interval '1 day' * (g::float8 / (%(total)s + 1)) as t,
                       case when g > %(jobs)s then interval '1 day' else interval '0' end as f) x
"""
_SEED_EVENTS = """
insert into pgjobs.job_events (job_id, job_type, attempt, from_state, to_state, worker,
                               duration_ms, at, actor)
select j.id, j.job_type, 1, e.from_state, e.to_state, 'bench/seed', e.duration_ms,
       case when e.to_state = 'running' then j.started_at else j.finished_at end, 'bench'
  from pgjobs.jobs j
 cross join (values ('queued', 'running', null::float8), ('running', 'completed', 0.5))
            e(from_state, to_state, duration_ms)
 order by 8
"""


def seed(dsn: str, jobs: int, kept: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        # As a database installed long ago: partitions of earlier periods can be made.
        for name in ("jobs_finished_history", "job_events_history"):
            conn.execute(f"drop table if exists pgjobs.{name}")
        conn.execute(
            "select pgjobs.partitions_ensure(t) from generate_series("
            " now() - interval '4 days', now(), interval '1 day') t"
        )
        conn.execute("set session_replication_role = replica")
        conn.execute(_SEED, {"total": jobs + kept, "jobs": jobs})
        conn.execute(_SEED_EVENTS)
        conn.execute("select setval('pgjobs.jobs_id_seq', %s)", (jobs + kept + 1,))
        conn.execute("vacuum analyze")
        conn.execute("checkpoint")


def drop(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        events = conn.execute("select count(*) from pgjobs.job_events").fetchone()
        started = time.perf_counter()
        with conn.transaction():
            row = conn.execute(
                "select pgjobs.partition_drop_oldest(now() - interval '3 days')"
            ).fetchone()
        seconds = time.perf_counter() - started
        left = conn.execute("select count(*) from pgjobs.job_events").fetchone()
    assert row is not None and events is not None and left is not None
    print(f"seconds={seconds:.3f} jobs={row[0]} events_before={events[0]} events_after={left[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["seed", "drop"])
    parser.add_argument("dsn")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--kept", type=int, default=1_000)
    args = parser.parse_args()
    if args.what == "seed":
        seed(args.dsn, args.jobs, args.kept)
    else:
        drop(args.dsn)


if __name__ == "__main__":
    main()
