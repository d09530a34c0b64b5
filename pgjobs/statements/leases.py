"""Leases and worker processes (``sql/queries/leases.sql``): the heartbeat, the
rescue of expired leases, and the settlement of a process that died."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from pgjobs.statements.base import Params, nothing, rows, scalar, statement


@statement("lease_renew", nothing, fetch=False)
def lease_renew(*, worker: str, ids: Iterable[int], lease_seconds: float) -> Params:
    """Renews every lease ``worker`` holds, and its heartbeat, in one statement."""
    return {"worker": worker, "ids": list(ids), "lease_seconds": lease_seconds}


class Rescued(NamedTuple):
    id: int
    state: str
    job_type: str
    organization: str | None
    attempt: int


def _rescued(found: list[Any]) -> list[Rescued]:
    return [Rescued(*row) for row in found]


@statement("lease_rescue", _rescued)
def lease_rescue(*, now: dt.datetime | None = None) -> Params:
    """Ends the attempts whose lease expired (one rescuer at a time)."""
    return {"now": now}


@statement("worker_register", nothing, fetch=False)
def worker_register(
    *, worker: str, host: str, pid: int, queues: Sequence[str], job_types: Sequence[str]
) -> Params:
    """Records a worker process, the queues it serves and the types it can run."""
    return {
        "worker": worker,
        "host": host,
        "pid": pid,
        "queues": list(queues),
        "job_types": list(job_types),
    }


@statement("worker_session_add", nothing, fetch=False)
def worker_session_add(*, worker: str) -> Params:
    """Records the session it runs on as one of ``worker``'s."""
    return {"worker": worker}


@statement("worker_sessions_end", scalar)
def worker_sessions_end(*, now: dt.datetime | None = None) -> Params:
    """Terminates the sessions of workers whose leases expired; how many."""
    return {"now": now}


@statement("worker_unregister", nothing, fetch=False)
def worker_unregister(*, worker: str) -> Params:
    return {"worker": worker}


@statement("worker_forget_stale", nothing, fetch=False)
def worker_forget_stale(*, stale_seconds: float) -> Params:
    return {"stale_seconds": stale_seconds}


@statement("job_return_worker", rows)
def return_worker(*, worker: str, except_ids: Sequence[int]) -> Params:
    """Gives back every job a dead process held but had not started."""
    return {"worker": worker, "except_ids": list(except_ids)}


@statement("backend_terminate", nothing, fetch=False)
def backend_terminate(*, pids: Sequence[int]) -> Params:
    """Stops the server sessions a killed process left running."""
    return {"pids": list(pids)}


@statement("job_return_crashed", rows)
def return_crashed(*, worker: str, except_ids: Sequence[int], reason: str) -> Params:
    """Settles the unstarted jobs of a process that crashed: back uncounted the
    first time, counted when a crashing process held the job before."""
    return {"worker": worker, "except_ids": list(except_ids), "reason": reason}


def _ids(found: list[Any]) -> set[int]:
    return {int(row[0]) for row in found}


@statement("job_cancels_confirmed", _ids)
def cancels_confirmed(*, leases: Sequence[tuple[int, int]]) -> Params:
    """Of these running attempts (job id, lease token), those whose cancel was
    requested: what a cancel NOTIFY claims, read under the lease."""
    return {"ids": [job for job, _ in leases], "tokens": [token for _, token in leases]}
