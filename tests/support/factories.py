"""Jobs in any state, made with plain SQL through allowed transitions only, so
every row a test starts from is one the state machine could have produced."""

from __future__ import annotations

from typing import Any

import psycopg

# The allowed path from a fresh (queued) job to each state.
PATHS: dict[str, tuple[str, ...]] = {
    "queued": (),
    "running": ("running",),
    "retrying": ("running", "retrying"),
    "completed": ("running", "completed"),
    "dead": ("running", "dead"),
    "canceled": ("canceled",),
}

JOB_TYPE = "t.noop"


def ensure_type(conn: psycopg.Connection[Any], name: str = JOB_TYPE) -> None:
    conn.execute(
        "insert into pgjobs.job_types (name, handler) values (%s, 'tests.support.handlers:noop') "
        "on conflict (name) do nothing",
        (name,),
    )


def insert_job(
    conn: psycopg.Connection[Any],
    *,
    job_type: str = JOB_TYPE,
    organization: str | None = None,
    depends_on: list[int] | None = None,
) -> int:
    row = conn.execute(
        "insert into pgjobs.jobs (job_type, organization, depends_on) values (%s, %s, %s) "
        "returning id",
        (job_type, organization, depends_on),
    ).fetchone()
    assert row is not None
    return int(next(iter(row.values())) if isinstance(row, dict) else row[0])


def move(conn: psycopg.Connection[Any], job_id: int, state: str) -> None:
    """One plain UPDATE of the state; entering running takes a lease and an attempt."""
    conn.execute(
        "update pgjobs.jobs set state = %(state)s, "
        "  attempt = attempt + case when %(state)s = 'running' then 1 else 0 end, "
        "  finished_at = case when %(state)s in ('completed', 'dead', 'canceled') "
        "                     then now() end, "
        # A finished job holds a token (0: it never ran), as pgjobs.cancel gives it.
        "  lease_token = case when %(state)s = 'running' "
        "                     then nextval('pgjobs.lease_token_seq') "
        "                     when %(state)s in ('completed', 'dead', 'canceled') "
        "                     then coalesce(lease_token, 0) else lease_token end "
        "where id = %(id)s",
        {"state": state, "id": job_id},
    )


def make_job(
    conn: psycopg.Connection[Any],
    state: str,
    *,
    job_type: str = JOB_TYPE,
    organization: str | None = None,
) -> int:
    """A job in ``state``; a waiting job gets a queued parent of its own."""
    ensure_type(conn, job_type)
    if state == "waiting":
        parent = insert_job(conn, job_type=job_type, organization=organization)
        child = insert_job(conn, job_type=job_type, organization=organization, depends_on=[parent])
        return child
    job_id = insert_job(conn, job_type=job_type, organization=organization)
    for step in PATHS[state]:
        move(conn, job_id, step)
    return job_id


def state_of(conn: psycopg.Connection[Any], job_id: int) -> str:
    row = conn.execute("select state from pgjobs.jobs where id = %s", (job_id,)).fetchone()
    assert row is not None, f"no job {job_id}"
    return str(next(iter(row.values())) if isinstance(row, dict) else row[0])
