"""Running claimed jobs: each job's handler is found and called with its
context, the attempt's outcome is handed to the completer, and the batch size
adapts to how long jobs take.

Runs in the worker process's main thread. The supervisor reads from the slot
what this process is running, to enforce timeouts and deliver cancels.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import psycopg

from pgjobs import log as pgjobs_log
from pgjobs import registry
from pgjobs.context import JobContext
from pgjobs.errors import InvalidJob, JobCanceled, PermanentError
from pgjobs.payload import encode
from pgjobs.statements import ClaimedJob, Completed, Failed, Outcome
from pgjobs.worker import starting
from pgjobs.worker.starting import JobSetupFailed

if TYPE_CHECKING:  # pgjobs.testing runs handlers through here, without a worker
    from pgjobs.worker.completer import Completer
    from pgjobs.worker.slots import Slots

_TARGET_BATCH_SECONDS = 0.05  # claim about this much work at a time


class _Fit(NamedTuple):
    """What payloads a handler takes by keyword, for a check without binding."""

    first: str  # the context's parameter, which no payload key may name
    names: frozenset[str]  # keyword parameters after it
    required: frozenset[str]  # those of them without a default
    any_keyword: bool  # **kwargs

    def fits(self, payload: dict[str, Any]) -> bool:
        keys = payload.keys()
        if not self.required <= keys:
            return False
        return self.first not in keys if self.any_keyword else keys <= self.names


@functools.cache
def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(fn)


@functools.cache
def _fit(fn: Callable[..., Any]) -> _Fit | None:
    """None when only a full bind can tell (positional-only parameters)."""
    params = list(_signature(fn).parameters.values())
    if not params or params[0].kind not in (
        params[0].POSITIONAL_ONLY,
        params[0].POSITIONAL_OR_KEYWORD,
    ):
        return None
    rest = params[1:]
    if any(p.kind is p.POSITIONAL_ONLY for p in rest):
        return None
    named = [p for p in rest if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return _Fit(
        params[0].name,
        frozenset(p.name for p in named),
        frozenset(p.name for p in named if p.default is p.empty),
        any(p.kind is p.VAR_KEYWORD for p in rest),
    )


def execute(fn: Callable[..., Any], ctx: JobContext) -> Outcome:
    started = time.perf_counter()
    try:
        payload = ctx.payload
        fit = _fit(fn)
        if fit is None or not fit.fits(payload):
            try:  # the full bind, for its precise message (or a rare signature)
                _signature(fn).bind(ctx, **payload)
            except TypeError as exc:
                raise PermanentError(f"payload does not fit the handler: {exc}") from exc
        value = fn(ctx, **payload)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
        result = None if value is None else encode(value, what="result")
    except JobCanceled as exc:
        return Failed("canceled", str(exc), None, True, _ms(started))
    except JobSetupFailed as exc:  # ctx.conn could not begin: not the handler's error
        return Failed(starting.SETUP_FAILED, str(exc), None, False, _ms(started))
    except PermanentError as exc:
        return Failed(_class_name(exc), str(exc), traceback.format_exc(), True, _ms(started))
    except InvalidJob as exc:  # e.g. a result that is not JSON
        return Failed(_class_name(exc), str(exc), traceback.format_exc(), True, _ms(started))
    except Exception as exc:
        return Failed(_class_name(exc), str(exc), traceback.format_exc(), False, _ms(started))
    return Completed(result, _ms(started))


async def _awaited(value: Any) -> Any:
    return await value


def _class_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__name__ if cls.__module__ in ("builtins", "pgjobs.errors") else cls.__qualname__


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


class BatchSize:
    """How many jobs to claim at once: about ``_TARGET_BATCH_SECONDS`` of work.

    Starts at one and grows (at most fourfold per batch) once jobs prove short,
    never past the configured batch size; a moving average of the time per job
    keeps one slow batch from halving it.

    ``seconds`` is the handlers' time, not the batch's wall time: with more
    processes than cores the claim and the writes wait for a CPU, and counting
    those waits as work shrank batches to one job, which multiplied the
    statements per job, and so the waits. A claim that came back ``full`` (the
    queue holds more) never shrinks the next one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 1
        self.avg_seconds = 0.0

    def adapt(self, count: int, seconds: float, *, full: bool = False) -> int:
        per_job = seconds / max(count, 1)
        self.avg_seconds = (
            per_job if not self.avg_seconds else 0.7 * self.avg_seconds + 0.3 * per_job
        )
        fit = math.ceil(_TARGET_BATCH_SECONDS / max(self.avg_seconds, 1e-6))
        size = max(1, min(self.limit, fit, self.current * 4))
        self.current = max(size, self.current) if full else size
        return self.current


class Executor:
    """Runs a claimed batch, one job after another, handing each outcome to the
    completer. ``stopping`` says SIGTERM came: the rest goes back unstarted."""

    def __init__(
        self,
        types: registry.Registry,
        completer: Completer,
        slots: Slots,
        index: int,
        worker: str,
        stopping: Callable[[], bool],
        log: Any,
        batch_limit: int,
    ) -> None:
        self.types = types  # the only handlers run: a stored path is never imported
        self.completer = completer
        self.slots = slots
        self.index = index
        self.worker = worker
        self.stopping = stopping
        self.log = log
        self.batch = BatchSize(batch_limit)
        self.handler_seconds = 0.0  # of the batch running

    def run_batch(self, control: psycopg.Connection[Any], jobs: list[ClaimedJob]) -> None:
        full = len(jobs) >= self.batch.current
        self.handler_seconds = 0.0
        completer = self.completer
        for position, job in enumerate(jobs):
            if self.stopping():
                completer.give_back(jobs[position:])
                break
            if control.closed:
                # Lost while the previous job ran: starting the next one would
                # only spend its attempt on the outage.
                completer.unstarted.extend(jobs[position:])
                raise psycopg.OperationalError("the connection is lost")
            try:
                self._run_one(control, job)  # raises only once the outcome is kept
            except psycopg.OperationalError:
                completer.unstarted.extend(jobs[position + 1 :])
                raise
        completer.flush()
        self.batch.adapt(len(jobs), self.handler_seconds, full=full)

    def _run_one(self, control: psycopg.Connection[Any], job: ClaimedJob) -> None:
        ctx = JobContext(
            job,
            control,
            lambda: self.completer.open_job_transaction(job),
            lambda: self.slots.cancel_requested(self.index, job.id),
            worker=self.worker,
        )
        self.slots.start(self.index, job.id, job.lease_token, job.timeout_seconds)
        started = time.monotonic()
        try:
            found = starting.handler_or_refusal(job, self.types)
            outcome = found if isinstance(found, Failed) else execute(found, ctx)
        finally:
            self.slots.finish(self.index)
        elapsed = time.monotonic() - started
        self.handler_seconds += elapsed
        outcome = _past_deadline(job, outcome, elapsed)
        self._log_outcome(job, outcome)
        self.completer.record(job, outcome, ctx.transaction_open)

    def _log_outcome(self, job: ClaimedJob, outcome: Outcome) -> None:
        if isinstance(outcome, Completed) and not pgjobs_log.enabled(logging.DEBUG):
            return  # the common case, at no cost
        keys = {
            "job_id": job.id,
            "job_type": job.job_type,
            "organization": job.organization,
            "attempt": job.attempt,
        }
        if isinstance(outcome, Completed):
            self.log.debug("job_completed", duration_ms=round(outcome.duration_ms, 3), **keys)
        else:
            self.log.info(
                "job_failed",
                error_class=outcome.error_class,
                error=outcome.message,
                permanent=outcome.permanent,
                **keys,
            )


def _past_deadline(job: ClaimedJob, outcome: Outcome, seconds: float) -> Outcome:
    """A failure past the job's deadline (a statement timeout, say) that came
    before the supervisor's kill is recorded as the timeout it is."""
    if (
        isinstance(outcome, Failed)
        and outcome.error_class != "canceled"
        and job.timeout_seconds
        and seconds >= job.timeout_seconds
    ):
        return Failed(
            "timeout",
            f"the job exceeded its timeout: {outcome.message}",
            outcome.traceback,
            False,
            outcome.duration_ms,
        )
    return outcome
