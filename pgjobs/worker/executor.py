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
from pgjobs.context import AsyncJobContext, JobContext
from pgjobs.errors import InvalidJob, JobCanceled, PermanentError
from pgjobs.payload import encode
from pgjobs.statements import ClaimedJob, Completed, Failed, Outcome
from pgjobs.worker import starting
from pgjobs.worker.starting import JobSetupFailed

if TYPE_CHECKING:  # pgjobs.testing runs handlers through here, without a worker
    from pgjobs.worker.completer import Completer
    from pgjobs.worker.lane import Lane
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
def _is_coroutine_function(fn: Callable[..., Any]) -> bool:
    """inspect.iscoroutinefunction, once per handler (it unwraps and reads
    code flags: a few microseconds, paid per job before)."""
    return inspect.iscoroutinefunction(fn)


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


def check_fit(fn: Callable[..., Any], ctx: JobContext | AsyncJobContext) -> None:
    """PermanentError if the payload does not fit the handler's parameters."""
    payload = ctx.payload
    fit = _fit(fn)
    if fit is None or not fit.fits(payload):
        try:  # the full bind, for its precise message (or a rare signature)
            _signature(fn).bind(ctx, **payload)
        except TypeError as exc:
            raise PermanentError(f"payload does not fit the handler: {exc}") from exc


def completed(value: Any, started: float) -> Completed:
    """A handler's return value as its outcome (InvalidJob if it is not JSON)."""
    return Completed(None if value is None else encode(value, what="result"), ms(started))


def failure(exc: Exception, started: float) -> Failed:
    """How an attempt that raised ``exc`` ends (called while it is handled)."""
    if isinstance(exc, JobCanceled):
        return Failed("canceled", str(exc), None, True, ms(started))
    if isinstance(exc, JobSetupFailed):  # ctx.conn could not begin: not the handler's error
        return Failed(starting.SETUP_FAILED, str(exc), None, False, ms(started))
    # InvalidJob: e.g. a result that is not JSON.
    permanent = isinstance(exc, PermanentError | InvalidJob)
    return Failed(_class_name(exc), str(exc), traceback.format_exc(), permanent, ms(started))


def execute(
    fn: Callable[..., Any],
    ctx: JobContext | AsyncJobContext,
    run_awaitable: Callable[[Any], Any] | None = None,
) -> Outcome:
    """Runs a handler to its outcome. A coroutine (``pgjobs.testing`` runs async
    handlers inline) runs to its end through ``run_awaitable`` (default: on a
    loop of its own); the worker runs them on its process's event loop
    instead (:mod:`pgjobs.worker.lane`)."""
    started = time.perf_counter()
    try:
        check_fit(fn, ctx)
        value = fn(ctx, **ctx.payload)
        if inspect.isawaitable(value):
            value = (run_awaitable or _run_apart)(value)
        return completed(value, started)
    except Exception as exc:
        return failure(exc, started)


async def _awaited(value: Any) -> Any:
    return await value


def _run_apart(value: Any) -> Any:
    return asyncio.run(_awaited(value))


def _class_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__name__ if cls.__module__ in ("builtins", "pgjobs.errors") else cls.__qualname__


def ms(started: float) -> float:
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
    queue holds more) never shrinks the next one; one that came back short
    makes the next no larger than what it got: the queue was shallow, and a
    process that claims ahead of what it can start makes a job wait behind
    another while its idle siblings could start it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 1
        self.avg_seconds = 0.0

    def emptied(self) -> None:
        """A claim found nothing: the next takes one job, and grows again
        (fourfold per batch) while claims come back full."""
        self.current = 1

    def adapt(self, count: int, seconds: float, *, full: bool = False) -> int:
        per_job = seconds / max(count, 1)
        self.avg_seconds = (
            per_job if not self.avg_seconds else 0.7 * self.avg_seconds + 0.3 * per_job
        )
        fit = math.ceil(_TARGET_BATCH_SECONDS / max(self.avg_seconds, 1e-6))
        size = max(1, min(self.limit, fit, self.current * 4))
        self.current = max(size, self.current) if full else max(1, min(size, count))
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
        lane: Lane | None = None,
    ) -> None:
        self.types = types  # the only handlers run: a stored path is never imported
        self.completer = completer
        self.slots = slots
        self.index = index
        self.worker = worker
        self.stopping = stopping
        self.log = log
        self.batch = BatchSize(batch_limit)
        self.handler_seconds = 0.0  # wall time of the batch's sync handlers so far
        self.run_queue = completer.run_queue  # this thread's: it runs sync handlers
        self.lane = lane  # runs async handlers; started at its first job if not before
        # Slot entries not in use (main thread only): a sync job takes one while
        # it runs, an async job until the lane hands its outcome back.
        self.free = list(range(slots.concurrency - 1, -1, -1))
        self.handing: list[tuple[int, ClaimedJob, Callable[..., Any]]] = []

    @property
    def in_flight(self) -> int:
        return self.slots.concurrency - len(self.free)

    @property
    def running_async(self) -> bool:
        return self.lane is not None and self.lane.thread.is_alive()

    def room(self) -> int:
        """How many jobs to claim now: a batch, or once async jobs run here, as
        many as there are free entries plus one round more, so that an entry
        a task gives back is refilled at once, without a claim's round trip."""
        if not self.running_async:
            return self.batch.current
        return min(self.batch.current, len(self.free) + self.slots.concurrency)

    def collect(self) -> int:
        """Hands the outcomes of finished async jobs to the completer."""
        lane = self.lane
        count = 0
        while lane is not None and lane.done:
            entry, job, outcome = lane.done.popleft()
            self.free.append(entry)
            self._log_outcome(job, outcome)
            self.completer.record(job, outcome, False)  # raises only once it is kept
            count += 1
        return count

    def run_batch(self, control: psycopg.Connection[Any], jobs: list[ClaimedJob]) -> None:
        full = len(jobs) >= self.batch.current
        self.handler_seconds = 0.0
        completer = self.completer
        started, waited = time.monotonic(), self.run_queue.seconds()
        try:
            for position, job in enumerate(jobs):
                self._wait_for_entry()
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
                except psycopg.Error:
                    completer.unstarted.extend(jobs[position + 1 :])
                    raise
        finally:
            self._hand_over()  # the async jobs taken in hand start whatever happens
        work = self._less_cpu_waits(self.handler_seconds, started, waited)
        completer.flush()
        self.batch.adapt(len(jobs), work, full=full)

    def _less_cpu_waits(self, seconds: float, started: float, waited: float) -> float:
        """``seconds`` of the handlers' wall time since ``started`` (on the
        monotonic clock, ``waited`` on the run-queue clock), less their share
        of the time this thread waited for a CPU meanwhile: the wait is taken
        as spread evenly over the batch. Two reads of the run-queue clock (a
        read of /proc each) per batch: one before and one after each job was
        a tenth of the worker's CPU per job in a drain of no-op jobs."""
        wall = time.monotonic() - started
        if wall <= 0:
            return seconds
        wait = min(max(self.run_queue.seconds() - waited, 0.0), wall)
        return seconds * (1 - wait / wall)

    def _run_one(self, control: psycopg.Connection[Any], job: ClaimedJob) -> None:
        ctx = JobContext(
            job,
            control,
            lambda: self.completer.open_job_transaction(job),
            lambda: self.slots.cancel_requested(self.index, job.id),
            worker=self.worker,
        )
        entry = self.free.pop()
        self.slots.start(self.index, job.id, job.lease_token, job.timeout_seconds, entry)
        started = time.monotonic()
        try:
            found = starting.handler_or_refusal(job, self.types)
            if isinstance(found, Failed):
                outcome: Outcome = found
            elif self.lane is not None and _is_coroutine_function(found):
                self._submit(entry, job, found)  # the entry is the task's until it ends
                entry = -1
                return
            else:
                self._hand_over()  # the async jobs before it need not wait for it
                outcome = execute(found, ctx)
        finally:
            if entry >= 0:
                self.slots.finish(self.index, entry)
                self.free.append(entry)
        elapsed = time.monotonic() - started
        self.handler_seconds += elapsed
        outcome = _past_deadline(job, outcome, elapsed)
        self._log_outcome(job, outcome)
        self.completer.record(job, outcome, ctx.transaction_open)

    def _wait_for_entry(self) -> None:
        """Until an async job in flight gives an entry back (the jobs claimed
        ahead wait in hand for one), or SIGTERM comes."""
        while not self.free and not self.stopping():
            assert self.lane is not None
            self._hand_over()
            self.lane.wake.wait(0.05)
            self.lane.wake.clear()
            self.collect()

    def _submit(self, entry: int, job: ClaimedJob, fn: Callable[..., Any]) -> None:
        assert self.lane is not None
        if not self.lane.thread.is_alive():
            self.lane.start()
        # The loop cancels the task at the deadline; the supervisor kills later.
        self.slots.start(self.index, job.id, job.lease_token, job.timeout_seconds, entry, True)
        self.handing.append((entry, job, fn))

    def _hand_over(self) -> None:
        """Starts the batch's async jobs on the loop, in one wake-up of it."""
        if self.handing:
            assert self.lane is not None
            handing, self.handing = self.handing, []
            self.lane.submit(handing)

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
            self.log.warning(
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
