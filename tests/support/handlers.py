"""Job types and handlers for the enqueue, state, worker, CLI and testing tests.

Worker processes started by those tests import this module (``--import
tests.support.handlers``), so every handler is a module-level function. Handlers that
leave evidence write it through ``ctx.conn`` into ``side``, a table the test
creates (``SIDE_TABLE``): those rows commit together with the job's completion,
or not at all.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg

import pgjobs

SIDE_TABLE = "create table side (job_id bigint primary key, organization text, attempt int)"

# Retry quickly, so that a job can spend all its attempts within a test.
RETRY_BASE = 0.05
FAST_RETRY: dict[str, Any] = {"retry_base": RETRY_BASE, "retry_cap": 10.0}


class Boom(Exception):
    """An ordinary exception: counts as a transient failure."""


@pgjobs.job("t.noop")
def noop(ctx: pgjobs.JobContext, **payload: Any) -> None:
    return None


@pgjobs.job("t.record")
def record(ctx: pgjobs.JobContext, **payload: Any) -> None:
    """Writes one row keyed by the job id: a second run of the job would collide."""
    ctx.conn.execute(
        "insert into side (job_id, organization, attempt) "
        "values (%s, current_setting('pgjobs.organization', true), %s)",
        (ctx.id, ctx.attempt),
    )


@pgjobs.job("t.add", max_attempts=1)
def add(ctx: pgjobs.JobContext, a: Any, b: Any) -> dict[str, Any]:
    return {"sum": a + b, "attempt": ctx.attempt, "nested": {"items": [a, b], "ok": True}}


@pgjobs.job("t.always_fails", max_attempts=4, **FAST_RETRY)
def always_fails(ctx: pgjobs.JobContext) -> None:
    """Writes its row, then fails: the row must be rolled back with the attempt."""
    record(ctx)
    raise Boom(f"attempt {ctx.attempt} failed")


@pgjobs.job("t.fails_once_then_succeeds", max_attempts=3, **FAST_RETRY)
def fails_once_then_succeeds(ctx: pgjobs.JobContext) -> dict[str, int]:
    if ctx.attempt == 1:
        raise pgjobs.TransientError("first attempt always fails")
    record(ctx)
    return {"attempt": ctx.attempt}


@pgjobs.job("t.single_attempt", max_attempts=1, **FAST_RETRY)
def single_attempt(ctx: pgjobs.JobContext) -> None:
    raise Boom("no second chance")


@pgjobs.job("t.permanent", max_attempts=5, **FAST_RETRY)
def permanent(ctx: pgjobs.JobContext) -> None:
    raise pgjobs.PermanentError("this input can never work")


@pgjobs.job("t.backoff", queue="q_backoff", max_attempts=6, retry_base=1, retry_cap=8)
def backoff(ctx: pgjobs.JobContext) -> None:
    """Driven by tests/test_worker.py through the claim and fail queries under an
    injected clock (never by a worker): base 1 s, cap 8 s, six attempts."""
    raise Boom("backing off")


@pgjobs.job("t.checkpointed", max_attempts=3, **FAST_RETRY)
def checkpointed(ctx: pgjobs.JobContext) -> dict[str, Any]:
    """Saves a checkpoint and fails on the first attempt; the second reads it back."""
    if ctx.attempt == 1:
        ctx.progress(50, "half way")
        ctx.checkpoint({"done": 5})
        raise Boom("crashed after the checkpoint")
    return {"resumed_from": ctx.last_checkpoint}


# -- observability (tests/test_observability.py) ---------------------------

# Rows the test writes to let t.progress_steps go on to its next step.
GATE_TABLE = "create table obs_gate (job_id bigint not null, step int not null)"


@pgjobs.job("t.progress_steps", timeout=60)
def progress_steps(ctx: pgjobs.JobContext, steps: list[int]) -> dict[str, Any]:
    """Reports each step, then holds until the test opens the gate for it, so the
    test can read every value from the row before the next one replaces it."""
    with psycopg.connect(os.environ["PGJOBS_DSN"], autocommit=True) as gate:
        for step in steps:
            ctx.progress(step, f"secret message {step}")
            deadline = time.monotonic() + 30
            while not gate.execute(
                "select exists (select from obs_gate where job_id = %s and step = %s)",
                (ctx.id, step),
            ).fetchone()[0]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the test never opened the gate for step {step}")
                time.sleep(0.01)
    return {"steps": steps}


@pgjobs.job("t.resume", max_attempts=3, **FAST_RETRY)
def resume(ctx: pgjobs.JobContext, total: int, fail_after: int) -> dict[str, Any]:
    """Works through ``total`` steps, checkpointing each; the first attempt fails
    transiently after ``fail_after`` steps; a retry starts after the checkpoint."""
    start = (ctx.last_checkpoint or {}).get("done", 0)
    ran = []
    for step in range(start, total):
        ran.append(step)
        ctx.checkpoint({"done": step + 1})
        if ctx.attempt == 1 and step + 1 == fail_after:
            raise pgjobs.TransientError(f"failed after step {step}")
    return {"attempt": ctx.attempt, "last_checkpoint": ctx.last_checkpoint, "ran": ran}


@pgjobs.job("t.chatty")
def chatty(ctx: pgjobs.JobContext) -> None:
    """Logs through ctx.log, which carries the job's keys."""
    ctx.log.info("handler_event", step=1)


# -- types for enqueue tests (never run by a worker) -----------------------


@pgjobs.job("t.defaults", queue="q_defaults", priority=1, max_attempts=7, timeout=42)
def with_defaults(ctx: pgjobs.JobContext, **payload: Any) -> None:
    return None


@pgjobs.job("t.zeros", priority=0, timeout=0, dedup_window=0, max_attempts=1)
def zeros(ctx: pgjobs.JobContext, **payload: Any) -> None:
    return None


@pgjobs.job("t.windowed", dedup_window=3600)
def windowed(ctx: pgjobs.JobContext, **payload: Any) -> None:
    return None


@pgjobs.job("t.by_payload", dedup_by_payload=True, dedup_window=3600)
def by_payload(ctx: pgjobs.JobContext, **payload: Any) -> None:
    return None


@pgjobs.job("t.disabled", enabled=False)
def disabled(ctx: pgjobs.JobContext, **payload: Any) -> None:
    return None


@pgjobs.job("t.other_queue", queue="q_other")
def other_queue(ctx: pgjobs.JobContext, **payload: Any) -> None:
    return None


@pgjobs.job("t.scope_probe")
def scope_probe(ctx: pgjobs.JobContext, **payload: Any) -> None:
    """Records which organizations the job's own transaction can see."""
    orgs = [r[0] for r in ctx.conn.execute("select distinct organization from pgjobs.jobs")]
    ctx.conn.execute("insert into seen (job_id, orgs) values (%s, %s)", (ctx.id, sorted(orgs)))
