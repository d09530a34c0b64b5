"""The application API written once, run by a blocking or an asyncio driver.

A public call (enqueue, get, metrics...) is a generator of *steps*: it checks
its arguments, yields each statement it needs (a :class:`~pgjobs.statements.Bound`)
and receives that statement's decoded result, then returns its answer. It does
no I/O, so the two faces are thin:

* :func:`drive` runs the steps on a blocking psycopg connection (``pgjobs.get``);
* :func:`adrive` runs the same steps with ``await`` (``pgjobs.aio.get``).

A statement's error is thrown back into the generator at its ``yield``, so the
steps translate errors (``with translated():``) exactly as straight-line code
would. :func:`blocking` and :func:`awaitable` turn one steps function into the
public function of each face, with the same arguments, docstring and errors::

    def get(info: ConnectionInfo, job_id: int) -> Steps[Job]: ...
    pgjobs.get = blocking(get)          # get(conn, job_id) -> Job
    pgjobs.aio.get = awaitable(get)     # await get(aconn, job_id) -> Job

The steps receive the connection's ``info`` (who and where, never I/O) for the
few that need it, such as the registry's per-database cache.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg import ConnectionInfo

from pgjobs import _conn
from pgjobs.statements import Bound, arun, run

T = TypeVar("T")
P = ParamSpec("P")
Steps = Generator[Bound[Any], Any, T]
StepsFunction = Callable[Concatenate[ConnectionInfo, P], Steps[T]]


def drive(conn: psycopg.Connection[Any], steps: Steps[T]) -> T:
    """Runs ``steps`` on a blocking connection; returns what they return."""
    try:
        stmt = next(steps)
        while True:
            try:
                value = run(conn, stmt)
            except Exception as exc:
                stmt = steps.throw(exc)
            else:
                stmt = steps.send(value)
    except StopIteration as done:
        result: T = done.value
        return result


async def adrive(conn: psycopg.AsyncConnection[Any], steps: Steps[T]) -> T:
    """:func:`drive` with ``await``: the only lines the asyncio face owns."""
    try:
        stmt = next(steps)
        while True:
            try:
                value = await arun(conn, stmt)
            except Exception as exc:
                stmt = steps.throw(exc)
            else:
                stmt = steps.send(value)
    except StopIteration as done:
        result: T = done.value
        return result


def _public_signature(fn: Callable[..., Any]) -> inspect.Signature:
    """The steps' signature with the connection where their ``info`` is."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    conn = inspect.Parameter("conn", inspect.Parameter.POSITIONAL_ONLY)
    return sig.replace(parameters=[conn, *params[1:]], return_annotation=inspect.Signature.empty)


def _name(call: Any, fn: Callable[..., Any]) -> None:
    """The public name (``enqueue``, not ``enqueue_steps``) and signature."""
    call.__signature__ = _public_signature(fn)
    call.__name__ = fn.__name__.removesuffix("_steps").lstrip("_")
    call.__qualname__ = fn.__qualname__.removesuffix("_steps").lstrip("_")


def blocking(fn: StepsFunction[P, T]) -> Callable[Concatenate[Any, P], T]:
    """The public blocking function of a steps function (``conn`` first)."""

    @functools.wraps(fn)
    def call(conn: Any, /, *args: P.args, **kwargs: P.kwargs) -> T:
        raw = _conn.raw(conn)
        return drive(raw, fn(raw.info, *args, **kwargs))

    _name(call, fn)
    return call


def awaitable(fn: StepsFunction[P, T]) -> Callable[Concatenate[Any, P], Awaitable[T]]:
    """The public coroutine function of a steps function (``aconn`` first)."""

    @functools.wraps(fn)
    async def call(conn: Any, /, *args: P.args, **kwargs: P.kwargs) -> T:
        raw = await _conn.araw(conn)
        return await adrive(raw, fn(raw.info, *args, **kwargs))

    _name(call, fn)
    return call
