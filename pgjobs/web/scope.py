"""Who is looking, and the scoped transaction every request runs in.

pgjobs authenticates no one: the host application's ``organization_for`` and
``actor_for`` hooks say who the viewer is. Each request then runs in one
transaction that takes a non-superuser role (``SET LOCAL ROLE``: pgjobs_app when
scoped by organization, pgjobs_admin for an operator dashboard), scopes itself
with ``pgjobs.tenant`` and names the actor, so row-level security, not this
code, decides what the viewer sees. Everything is transaction-local, so a
pooled connection (or PgBouncer in transaction mode) carries nothing over.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from pgjobs import sql
from pgjobs.errors import AccessDenied
from pgjobs.tenancy import set_actor, tenant

T = TypeVar("T")
Hook = Callable[[Request], "str | Awaitable[str | None] | None"]

APP_ROLE = "pgjobs_app"
ADMIN_ROLE = "pgjobs_admin"


@dataclasses.dataclass(frozen=True)
class Viewer:
    """The organization a request is scoped to (None: an operator, every
    organization) and the actor it acts as (None: the login role)."""

    organization: str | None
    actor: str | None

    @property
    def operator(self) -> bool:
        return self.organization is None


class NoOrganization(AccessDenied):
    """organization_for gave no organization: the request sees nothing."""


async def _call(hook: Hook, request: Request) -> str | None:
    value = hook(request)
    if inspect.isawaitable(value):
        value = await value
    if value is not None and not isinstance(value, str):
        raise TypeError(f"pgjobs.web: a hook returned {type(value).__name__}, not str or None")
    return value


class Scope:
    """The pool and the hooks; opens each request's scoped transaction."""

    def __init__(
        self,
        dsn: str,
        organization_for: Hook | None,
        actor_for: Hook | None,
        *,
        pool_size: int = 8,
    ) -> None:
        self.dsn = dsn
        self.organization_for = organization_for
        self.actor_for = actor_for
        self.role = ADMIN_ROLE if organization_for is None else APP_ROLE
        # check= hands out only live connections: after a Postgres restart the
        # next request reconnects instead of failing on a dead socket.
        self.pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=10,
            check=ConnectionPool.check_connection,
            name="pgjobs.web",
        )
        self._checked = False
        self._open_lock = threading.Lock()

    @property
    def operator_mode(self) -> bool:
        return self.organization_for is None

    async def viewer(self, request: Request) -> Viewer:
        """Resolves the hooks once per request (cached on request.state)."""
        cached = getattr(request.state, "pgjobs_viewer", None)
        if isinstance(cached, Viewer):
            return cached
        organization = None
        if self.organization_for is not None:
            organization = await _call(self.organization_for, request)
            if not organization:
                raise NoOrganization("no organization for this request")
        actor = await _call(self.actor_for, request) if self.actor_for is not None else None
        viewer = Viewer(organization, actor or None)
        request.state.pgjobs_viewer = viewer
        return viewer

    async def run(self, request: Request, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``fn(conn)`` in a worker thread, inside the request's scoped transaction."""
        viewer = await self.viewer(request)
        return await run_in_threadpool(self.run_as, viewer, fn)

    def run_as(self, viewer: Viewer, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        self.open()
        with self.pool.connection() as conn:
            if not self._checked:
                self._check_role(conn)
            with conn.transaction():
                conn.execute(sql.query("web_role_admin" if viewer.operator else "web_role_app"))
                if viewer.organization is not None:
                    with tenant(conn, viewer.organization, actor=viewer.actor):
                        return fn(conn)
                if viewer.actor is not None:
                    set_actor(conn, viewer.actor)
                return fn(conn)

    def open(self) -> None:
        # Opened on first use rather than at startup: a host application that
        # mounts the app does not run a mounted app's lifespan.
        with self._open_lock:
            if self.pool.closed:
                self.pool.open(wait=False)

    def close(self) -> None:
        if not self.pool.closed:
            self.pool.close()

    def _check_role(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute(sql.query("web_role_check"), {"role": self.role}).fetchone()
        conn.rollback()
        if row is None or not row[0]:
            raise AccessDenied(
                f"pgjobs.web: the DSN's role may not act as {self.role}; "
                f"GRANT {self.role} TO <that role>"
            )
        self._checked = True
