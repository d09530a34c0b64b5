"""The HTML pages: overview, jobs, a job, dead letter, workers, schedules.

Every read goes through the public Python API (or a named query in
sql/queries/web.sql) inside the request's scoped transaction. Actions are
POSTed forms with a CSRF token, answered by a redirect back (no JavaScript
needed); htmx and pgjobs.js only add the live updates.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.templating import Jinja2Templates

import pgjobs
from pgjobs import sql
from pgjobs.errors import AccessDenied, InvalidJob, InvalidTransition, JobNotFound
from pgjobs.states import State
from pgjobs.web import csrf, sse
from pgjobs.web.records import plain, plain_all
from pgjobs.web.routes.api import SSE_HEADERS, list_arguments
from pgjobs.web.state import CrossSite, Web, base, job_id

Handler = Callable[[Request], Awaitable[Response]]
Conn = psycopg.Connection[Any]

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
PAGE_SIZE = 50


def rows(conn: Conn, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql.query(name), params or {}).fetchall()


def schedules_present(conn: Conn) -> bool:
    if not rows(conn, "web_schedules_exist")[0]["present"]:
        return False
    try:
        with conn.transaction():
            return bool(rows(conn, "web_schedules_any")[0]["any"])
    except psycopg.errors.InsufficientPrivilege:
        return False


async def render(web: Web, request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
    viewer = await web.scope.viewer(request)
    response = templates.TemplateResponse(
        request,
        name,
        {
            "viewer": viewer,
            "base": base(request),
            "csrf_token": csrf.token(request),
            "allow_actions": web.allow_actions,
            "role": web.scope.role,
            **ctx,
        },
        status_code=status,
    )
    csrf.remember(request, response)
    return response


def page_errors(web: Web, handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except JobNotFound as exc:
            status, message = 404, str(exc)
        except InvalidJob as exc:
            status, message = 400, str(exc)
        except InvalidTransition as exc:
            status, message = 409, str(exc)
        except AccessDenied as exc:
            status, message = 403, str(exc)
        except psycopg.OperationalError as exc:
            status, message = 503, f"database unavailable: {str(exc).strip()}"
        try:
            return await render(web, request, "error.html", status, message=message, code=status)
        except AccessDenied:  # the hooks themselves refused: no viewer to render for
            return Response(message, status_code=status, media_type="text/plain")

    return wrapped


def chart(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars of completed and failed attempts per minute, scaled to 100 units."""
    top = max([int(p["completed"]) + int(p["failed"]) for p in points] + [1])
    bars = [
        {
            "minute": p["minute"],
            "completed": int(p["completed"]),
            "failed": int(p["failed"]),
            "h_ok": 100 * int(p["completed"]) / top,
            "h_failed": 100 * int(p["failed"]) / top,
        }
        for p in points
    ]
    return {"bars": bars, "top": top, "total": sum(b["completed"] + b["failed"] for b in bars)}


def overview_data(conn: Conn, operator: bool) -> dict[str, Any]:
    metrics = pgjobs.metrics(conn)
    counts: dict[str, int] = dict.fromkeys(State, 0)
    for row in metrics["job_counts"]:
        counts[row["state"]] += int(row["jobs"])
    return {
        "metrics": metrics,
        "counts": counts,
        "chart": chart(rows(conn, "web_throughput")),
        "workers": rows(conn, "web_workers") if operator else None,
        "unserved": rows(conn, "web_unserved_types") if operator else None,
        "schedules": schedules_present(conn),
    }


def job_data(conn: Conn, ident: int) -> dict[str, Any]:
    job = plain(pgjobs.get(conn, ident))
    parents = rows(conn, "web_job_parents", {"ids": job["depends_on"] or []})
    return {
        "job": job,
        "events": plain_all(pgjobs.history(conn, ident)),
        "parents": parents,
        "children": rows(conn, "web_job_children", {"id": ident}),
        "schedules": schedules_present(conn),
    }


def routes(web: Web) -> list[Route]:
    run = web.scope.run

    async def overview(request: Request) -> Response:
        viewer = await web.scope.viewer(request)
        data = await run(request, lambda c: overview_data(c, viewer.operator))
        return await render(web, request, "overview.html", page="overview", **data)

    async def jobs_page(request: Request) -> Response:
        filters = list_arguments(request.query_params)
        filters["limit"] = PAGE_SIZE

        def read(conn: Conn) -> dict[str, Any]:
            found = plain_all(pgjobs.list_jobs(conn, **filters))
            return {"jobs": found, "schedules": schedules_present(conn)}

        data = await run(request, read)
        more = len(data["jobs"]) == PAGE_SIZE
        query = {k: v for k, v in request.query_params.items() if k not in ("after_id", "limit")}
        return await render(
            web, request, "jobs.html", page="jobs", filters=query, states=list(State),
            next_after_id=data["jobs"][-1]["id"] if more else None, **data,
        )  # fmt: skip

    async def job_page(request: Request) -> Response:
        ident = job_id(request.path_params["id"])
        data = await run(request, lambda c: job_data(c, ident))
        return await render(web, request, "job.html", page="jobs", **data)

    async def dead_page(request: Request) -> Response:
        job_type = request.query_params.get("job_type") or None

        def read(conn: Conn) -> dict[str, Any]:
            found = pgjobs.list_jobs(conn, state="dead", job_type=job_type, limit=100)
            return {"jobs": plain_all(found), "schedules": schedules_present(conn)}

        data = await run(request, read)
        return await render(web, request, "dead.html", page="dead", job_type=job_type, **data)

    async def workers_page(request: Request) -> Response:
        viewer = await web.scope.viewer(request)

        def read(conn: Conn) -> dict[str, Any]:
            operator = viewer.operator
            return {
                "workers": rows(conn, "web_workers") if operator else None,
                "unserved": rows(conn, "web_unserved_types") if operator else None,
                "schedules": schedules_present(conn),
            }

        data = await run(request, read)
        return await render(web, request, "workers.html", page="workers", **data)

    async def schedules_page(request: Request) -> Response:
        def read(conn: Conn) -> dict[str, Any]:
            present = schedules_present(conn)
            return {"items": rows(conn, "web_schedules") if present else [], "schedules": present}

        data = await run(request, read)
        return await render(web, request, "schedules.html", page="schedules", **data)

    pages = [
        Route("/", overview, methods=["GET"]),
        Route("/jobs", jobs_page, methods=["GET"]),
        Route("/jobs/{id}", job_page, methods=["GET"]),
        Route("/dead", dead_page, methods=["GET"]),
        Route("/workers", workers_page, methods=["GET"]),
        Route("/schedules", schedules_page, methods=["GET"]),
    ]
    wrapped = [Route(r.path, page_errors(web, r.endpoint), methods=["GET"]) for r in pages]
    return wrapped + action_routes(web) + [Route("/events", page_errors(web, live(web)))]


def action_routes(web: Web) -> list[Route]:
    """The forms' POSTs: CSRF-checked, then a redirect back to where they came from."""

    def action(work: Callable[[Request, Any], Awaitable[str]]) -> Handler:
        async def post(request: Request) -> Response:
            web.require_actions()
            if not await csrf.form_ok(request):
                raise CrossSite("missing or wrong CSRF token")
            form = await request.form()
            target = await work(request, form)
            return RedirectResponse(base(request) + target, status_code=303)

        return page_errors(web, post)

    async def cancel(request: Request, form: Any) -> str:
        ident = job_id(request.path_params["id"])
        await web.scope.run(request, lambda c: pgjobs.cancel(c, ident))
        return f"/jobs/{ident}"

    async def retry(request: Request, form: Any) -> str:
        ident = job_id(request.path_params["id"])
        await web.scope.run(request, lambda c: pgjobs.retry(c, ident))
        return f"/jobs/{ident}"

    async def retry_shown(request: Request, form: Any) -> str:
        # Exactly the jobs the page showed, in one transaction: all or none.
        ids = [job_id(str(v)) for v in form.getlist("id")]
        await web.scope.run(request, lambda c: [pgjobs.retry(c, i) for i in ids])
        return "/dead"

    return [
        Route("/jobs/{id}/cancel", action(cancel), methods=["POST"]),
        Route("/jobs/{id}/retry", action(retry), methods=["POST"]),
        Route("/dead/retry", action(retry_shown), methods=["POST"]),
    ]


def live(web: Web) -> Handler:
    """SSE for the list pages: a ``changed`` event whenever the viewer's own
    jobs (read under its scope) were added, moved or finished."""

    async def events(request: Request) -> Response:
        viewer = await web.scope.viewer(request)

        async def read() -> tuple[str, Any, bool]:
            found = await web.scope.run(request, lambda c: rows(c, "web_fingerprint")[0])
            return "changed", found, False

        waiter = sse.Waiter(None, viewer.organization, debounce=1.0)
        body = sse.stream(web.listener, waiter, read, poll_seconds=max(web.poll_seconds, 5.0))
        return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)

    return events
