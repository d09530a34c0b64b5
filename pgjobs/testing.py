"""Helpers for your own tests: run jobs inline, in this process.

No worker, no fork, no waiting: a job runs on the connection you pass, through
the same claim, handler call and completion the worker uses, so what a test
sees (state, result, attempts, history, retries) is what production does::

    job = pgjobs.enqueue(conn, "send_report", {"month": "2026-10"}, organization="acme")
    done = pgjobs.testing.run_job(conn, job.id)
    assert done.state is pgjobs.State.COMPLETED and done.result == {"url": "..."}

    assert pgjobs.testing.drain(conn) == {"completed": 12}

The connection should be in autocommit mode (each step commits, as in the
worker) or inside a transaction the test rolls back; ``ctx.conn`` in a handler
is that same connection. Handlers are found as the worker finds them: the
registration in ``registry`` (default: the current one, that is the registry of
``@pgjobs.job`` unless a block made another current), and nowhere else (the
handler path stored with a job type is never imported); a job whose type has
none there fails its attempt with ``handler_not_registered``.
Timeouts are not enforced here (that needs the worker's processes). An
``async def`` handler runs here too, to its end, with the awaitable context
(``await ctx.progress(...)``) the worker gives it.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import inspect
import threading
from typing import Any

import psycopg

from pgjobs import _conn, jobs
from pgjobs.context import AsyncJobContext, JobContext
from pgjobs.errors import InvalidJob, InvalidTransition
from pgjobs.records import Job
from pgjobs.registry import Registry, current
from pgjobs.statements import Bound, ClaimedJob, Completed, Failed, Outcome, outcomes, run
from pgjobs.statements import claim as claiming
from pgjobs.tenancy import current_organization, set_organization
from pgjobs.worker.executor import execute
from pgjobs.worker.starting import handler_or_refusal

WORKER = "pgjobs.testing"
_LEASE_SECONDS = 3600.0


def run_job(conn: psycopg.Connection[Any], job_id: int, *, registry: Registry | None = None) -> Job:
    """Runs one queued or retrying job now, whatever its run_at; returns it as it ended."""
    raw = _conn.raw(conn)
    rows = claiming.take_job(raw, job_id=job_id, worker=WORKER, lease_seconds=_LEASE_SECONDS)
    if not rows:
        state = jobs.get(raw, job_id).state  # JobNotFound if there is none
        raise InvalidTransition(f"job {job_id} is {state}; only queued or retrying jobs can run")
    _run(raw, rows[0], registry or current())
    return jobs.get(raw, job_id)


def drain(
    conn: psycopg.Connection[Any],
    *,
    queues: list[str] | None = None,
    now: dt.datetime | None = None,
    max_jobs: int = 100_000,
    registry: Registry | None = None,
) -> dict[str, int]:
    """Runs every job due by ``now`` (default: the database's clock) in ``queues``
    (default: all) until none is left, retries included once they are due.
    Returns how many attempts ended in each state."""
    if max_jobs < 1:
        raise InvalidJob("max_jobs must be at least 1")
    raw = _conn.raw(conn)
    handlers = registry or current()
    ended: collections.Counter[str] = collections.Counter()
    for _ in range(max_jobs):
        rows = claiming.claim_next(
            raw, worker=WORKER, queues=queues, lease_seconds=_LEASE_SECONDS, now=now
        )
        if not rows:
            break
        ended[_run(raw, rows[0], handlers)] += 1
    return dict(ended)


def _run(conn: psycopg.Connection[Any], job: ClaimedJob, registry: Registry) -> str:
    found = handler_or_refusal(job, registry)
    outcome: Outcome = found if isinstance(found, Failed) else Completed(None, 0.0)
    # As in the worker: the handler runs scoped to the job's organization, and
    # its writes commit with the completion or are rolled back with a failure.
    if not isinstance(found, Failed):
        with conn.transaction() as tx:
            previous = current_organization(conn)
            set_organization(conn, job.organization)
            ctx = _context(found, job, conn)
            outcome = execute(found, ctx, lambda awaitable: _loop(registry).run(awaitable))
            set_organization(conn, previous)
            if isinstance(outcome, Completed):
                done = outcomes.complete_many(conn, [(job, outcome)])
            else:
                raise psycopg.Rollback(tx)
    if not isinstance(outcome, Completed):
        done = outcomes.fail_many(conn, [(job, outcome)])
    return str(jobs.get(conn, job.id).state) if done else "lost"  # lease gone


def _context(
    fn: Any, job: ClaimedJob, conn: psycopg.Connection[Any]
) -> JobContext | AsyncJobContext:
    """An async handler gets the awaitable context, its statements run inline
    on ``conn`` (the handler itself runs to its end on a loop of its own)."""
    if not inspect.iscoroutinefunction(fn):
        return JobContext(job, conn, lambda: conn, lambda: False, worker=WORKER)

    async def inline(stmt: Bound[Any]) -> Any:
        return run(conn, stmt)

    return AsyncJobContext(job, inline, lambda: False, worker=WORKER)


class _Loop:
    """The event loop async handlers run on here: one, made at the first async
    job and kept, on a thread of its own (so a test that is itself async may
    call these helpers), with the registry's ``on_worker_start`` hooks run on
    it once, as a worker process does."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="pgjobs-testing", daemon=True).start()
        self.started: set[int] = set()

    def run(self, awaitable: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(_awaited(awaitable), self.loop).result()

    def start(self, registry: Registry) -> None:
        if id(registry) in self.started:
            return
        self.started.add(id(registry))
        for hook in registry.start_hooks():
            value = self.run(_call(hook))
            if inspect.isawaitable(value):
                self.run(value)


_the_loop: _Loop | None = None


def _loop(registry: Registry) -> _Loop:
    global _the_loop
    if _the_loop is None:
        _the_loop = _Loop()
    _the_loop.start(registry)
    return _the_loop


async def _awaited(value: Any) -> Any:
    return await value


async def _call(hook: Any) -> Any:
    return hook()  # on the loop's thread, as in a worker
