"""Runs one claimed job's handler and says how the attempt ended."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple

from pgjobs import registry
from pgjobs.context import ClaimedJob, JobContext
from pgjobs.errors import InvalidJob, JobCanceled, PermanentError
from pgjobs.payload import encode


class Completed(NamedTuple):
    result: str | None  # JSON text
    duration_ms: float


class Failed(NamedTuple):
    error_class: str
    message: str
    traceback: str | None
    permanent: bool
    duration_ms: float


Outcome = Completed | Failed


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
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY,
                                            params[0].POSITIONAL_OR_KEYWORD):
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


def handler_for(
    job_type: str, path: str | None, types: registry.Registry | None = None
) -> Callable[..., Any]:
    """The registration in ``types`` (default: the current registry) wins;
    otherwise the path stored with the job type."""
    fn = (types or registry.current()).handler(job_type)
    if fn is not None:
        return fn
    if path is None:
        raise InvalidJob(f"no handler registered for job type {job_type!r}")
    return _imported(path)


@functools.cache
def _imported(path: str) -> Callable[..., Any]:
    return registry.resolve_handler(path)


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


def completion_params(items: list[tuple[ClaimedJob, Completed]]) -> dict[str, Any]:
    """Parameters of the job_complete_many query for finished attempts.

    Sent as array and JSON literals: building one string is several times
    cheaper than adapting a list item by item, and this runs for every job."""
    return {
        "ids": _numbers([j.id for j, _ in items]),
        "tokens": _numbers([j.lease_token for j, _ in items]),
        "results": "[" + ",".join("null" if o.result is None else o.result for _, o in items) + "]",
        "durations": _numbers([o.duration_ms for _, o in items]),
        "now": None,
    }


def _numbers(values: list[int] | list[float]) -> str:
    """A Postgres array literal of numbers (repr of a float is exact)."""
    return "{" + ",".join(map(repr, values)) + "}"


def failure_params(items: list[tuple[ClaimedJob, Failed]]) -> dict[str, Any]:
    """Parameters of the job_fail_many query for failed attempts."""
    return {
        "ids": [j.id for j, _ in items],
        "tokens": [j.lease_token for j, _ in items],
        "error_classes": [o.error_class for _, o in items],
        "messages": [o.message for _, o in items],
        "tracebacks": [o.traceback for _, o in items],
        "permanent": [o.permanent for _, o in items],
        "durations": [o.duration_ms for _, o in items],
        "now": None,
    }
