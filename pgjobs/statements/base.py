"""Named statements as data: the query, its parameters and how to read its rows.

Each statement of ``sql/queries`` has one :class:`Statement` here, built from a
function that turns typed keyword arguments into the query's parameters and a
decoder that turns the fetched rows into the caller's value. Neither does any
I/O, so an executor is a few lines: :func:`run` here for psycopg's blocking
connections and :func:`arun`, the same lines with ``await``, for asyncio ones.
No SQL text, parameter building or row decoding exists twice.

Calling a statement runs it on a blocking connection::

    jobs = claim(conn, worker="host/1", queues=["default"], n=10, lease_seconds=30)

and ``claim.bind(...)`` gives the :class:`Bound` statement an executor runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, LiteralString, ParamSpec, TypeVar

import psycopg
from psycopg.rows import RowFactory, tuple_row

from pgjobs import _conn, pooler, sql

P = ParamSpec("P")
T = TypeVar("T")
Params = Mapping[str, Any]


class Bound(Generic[T]):
    """One statement ready to run: what an executor sends and how it reads the answer."""

    __slots__ = ("decode", "fetch", "jsonb", "params", "query", "row_factory")

    def __init__(
        self,
        query: LiteralString,
        params: Params | None,
        decode: Callable[[list[Any]], T],
        fetch: bool,
        row_factory: RowFactory[Any],
        jsonb: bool = False,
    ) -> None:
        self.query = query
        self.params = params
        self.decode = decode
        self.fetch = fetch  # False: the rows (if any) are never read
        self.row_factory = row_factory
        # True: jsonb columns are read as Python objects whatever loaders the
        # connection has (Django's loads jsonb as text), for rows given to users.
        self.jsonb = jsonb


class Statement(Generic[P, T]):
    """One named query of ``sql/queries``; see the module docstring."""

    def __init__(
        self,
        name: str,
        build: Callable[P, Params | None],
        decode: Callable[[list[Any]], T],
        *,
        fetch: bool = True,
        row_factory: RowFactory[Any] = tuple_row,
        jsonb: bool = False,
    ) -> None:
        self.name = name
        self._build = build
        self._decode = decode
        self._fetch = fetch
        self._row_factory = row_factory
        self._jsonb = jsonb
        functools.update_wrapper(self, build)

    @functools.cached_property
    def query(self) -> LiteralString:
        return sql.query(self.name)  # read on first use: importing costs no file reads

    def bind(self, *args: P.args, **kwargs: P.kwargs) -> Bound[T]:
        params = self._build(*args, **kwargs)
        return Bound(self.query, params, self._decode, self._fetch, self._row_factory, self._jsonb)

    def __call__(self, conn: psycopg.Connection[Any], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return run(conn, self.bind(*args, **kwargs))


def run(conn: psycopg.Connection[Any], stmt: Bound[T]) -> T:
    """The blocking executor: one round trip, rows read only when wanted.

    Statements go through psycopg's own prepared-statement cache (prepared after
    a few runs of the same text), exactly as ``conn.execute`` would send them;
    never behind a transaction-mode pooler, whatever the connection's
    ``prepare_threshold`` (:mod:`pgjobs.pooler`).
    """
    cur = conn.cursor(row_factory=stmt.row_factory)
    if stmt.jsonb:
        _conn.own_types(cur)
    cur.execute(stmt.query, stmt.params, prepare=pooler.prepare_flag(conn))
    return stmt.decode(cur.fetchall() if stmt.fetch else [])


async def arun(conn: psycopg.AsyncConnection[Any], stmt: Bound[T]) -> T:
    """The asyncio executor: :func:`run` with ``await`` where it waits.

    It leaves preparing to the connection: behind a transaction-mode pooler,
    give the AsyncConnection ``prepare_threshold=None`` (pgjobs' own async
    sessions do)."""
    cur = conn.cursor(row_factory=stmt.row_factory)
    if stmt.jsonb:
        _conn.own_types(cur)
    await cur.execute(stmt.query, stmt.params)
    return stmt.decode(await cur.fetchall() if stmt.fetch else [])


def run_writes(conn: psycopg.Connection[Any], stmts: Iterable[Bound[Any]]) -> None:
    """Sends several writes in one pipeline (one round trip) without reading
    their rows: for batches whose outcome the caller does not need back."""
    prepare = pooler.prepare_flag(conn)
    stmts = list(stmts)
    if len(stmts) == 1:
        # One write goes without a pipeline: its Sync leaves with it. In a
        # pipeline the server ran the write, then waited (in the transaction,
        # holding its row locks and the xmin horizon) for the Sync the client
        # sent after more Python; with more processes than cores the client
        # was often descheduled in between (64 processes on 2 cores: 2.5
        # sessions on average in ClientRead inside a completion).
        conn.execute(stmts[0].query, stmts[0].params, prepare=prepare)
        return
    with conn.pipeline():
        for stmt in stmts:
            conn.execute(stmt.query, stmt.params, prepare=prepare)


def statement(
    name: str,
    decode: Callable[[list[Any]], T],
    *,
    fetch: bool = True,
    row_factory: RowFactory[Any] = tuple_row,
    jsonb: bool = False,
) -> Callable[[Callable[P, Params | None]], Statement[P, T]]:
    """Decorates the parameter builder of the query ``name``."""

    def wrap(build: Callable[P, Params | None]) -> Statement[P, T]:
        return Statement(name, build, decode, fetch=fetch, row_factory=row_factory, jsonb=jsonb)

    return wrap


# -- decoders ----------------------------------------------------------------


def rows(found: list[Any]) -> list[Any]:
    return found


def one(found: list[Any]) -> Any:
    """The first row, or None."""
    return found[0] if found else None


def scalar(found: list[Any]) -> Any:
    """The first column of the first row, or None."""
    return found[0][0] if found else None


def flag(found: list[Any]) -> bool:
    """A boolean first column; False when there is no row."""
    return bool(found and found[0][0])


def nothing(found: list[Any]) -> None:
    return None
