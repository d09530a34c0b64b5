"""``pgjobs.web.create_app``: the dashboard and JSON API as one ASGI app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from pgjobs.web import pages
from pgjobs.web.routes import api
from pgjobs.web.scope import Hook, Scope
from pgjobs.web.sse import POLL_SECONDS, Listener
from pgjobs.web.state import Web

STATIC = Path(__file__).parent / "static"


def create_app(
    dsn: str,
    *,
    organization_for: Hook | None = None,
    actor_for: Hook | None = None,
    allow_actions: bool = False,
    poll_seconds: float = POLL_SECONDS,
) -> Starlette:
    """The dashboard and the JSON API.

    ``organization_for(request)`` and ``actor_for(request)`` (plain or async)
    come from the host application's authentication: every request runs as
    pgjobs_app scoped to that organization, acting as that actor. With no
    ``organization_for`` the app is an operator's view of every organization,
    with pgjobs_admin's rights, and says so on every page. The DSN's login role
    must be a member of the role it runs as (a superuser is never used as one).
    Writes (enqueue, cancel, retry) need ``allow_actions``.
    """
    scope = Scope(dsn, organization_for, actor_for)
    web = Web(scope, Listener(dsn), allow_actions, poll_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Runs when the app is served on its own; a host that mounts it and
        # never runs this gets the pool and listener opened on first use.
        yield
        web.listener.close()
        scope.close()

    app = Starlette(
        routes=[
            *api.routes(web),
            *pages.routes(web),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.pgjobs = web
    return app
