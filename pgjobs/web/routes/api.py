"""The JSON API: the Python API over HTTP, with the same meanings.

Errors are ``{"error": message, "type": kind}`` with the status of the pgjobs
exception: 400 InvalidJob, 404 JobNotFound (absent, or another organization's:
the two are indistinguishable), 409 InvalidTransition, 403 AccessDenied (a
read-only dashboard, a cross-site write, or a cancel that the job type's
cancel policy keeps for the job's creator), 503 when Postgres cannot be reached.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

import pgjobs
from pgjobs.errors import AccessDenied, InvalidJob, InvalidTransition, JobNotFound
from pgjobs.states import TERMINAL
from pgjobs.web import csrf, sse
from pgjobs.web.records import JSON, error, plain, plain_all
from pgjobs.web.routes.openapi import document
from pgjobs.web.state import CrossSite, Web, job_id, parse_int, parse_time

Handler = Callable[[Request], Awaitable[Response]]

MAX_BODY_BYTES = 2 * 1024 * 1024
LIST_FILTERS = frozenset(
    {"state", "job_type", "queue", "organization", "since", "until", "limit", "after_id"}
)
ENQUEUE_FIELDS = frozenset(
    {"job_type", "payload", "queue", "priority", "run_at", "delay", "dedup_key", "depends_on",
     "max_attempts", "timeout", "organization"}
)  # fmt: skip


def json_errors(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except InvalidJob as exc:
            return error(400, str(exc), "invalid")
        except JobNotFound as exc:
            return error(404, str(exc), "not_found")
        except InvalidTransition as exc:
            return error(409, str(exc), "wrong_state")
        except AccessDenied as exc:
            return error(403, str(exc), "denied")
        except psycopg.OperationalError as exc:
            return error(503, f"database unavailable: {str(exc).strip()}", "unavailable")

    return wrapped


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidJob(f"request body over {MAX_BODY_BYTES} bytes")
    if not raw:
        return {}
    try:
        import json

        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidJob(f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidJob("the body must be a JSON object")
    return body


def _write_allowed(web: Web, request: Request) -> None:
    web.require_actions()
    if not csrf.same_origin(request):
        raise CrossSite("a write from another site's page is refused")


def enqueue_arguments(body: dict[str, Any], organization: str | None) -> dict[str, Any]:
    """The keyword arguments of pgjobs.enqueue from a request body."""
    unknown = sorted(set(body) - ENQUEUE_FIELDS)
    if unknown:
        raise InvalidJob(f"unknown field(s): {', '.join(unknown)}")
    args = {k: v for k, v in body.items() if k not in ("job_type", "payload")}
    if organization is not None:
        given = args.get("organization", organization)
        if given != organization:
            raise InvalidJob("organization is set by the request's scope, not the body")
        args["organization"] = organization
    if "run_at" in args:
        args["run_at"] = parse_time("run_at", args["run_at"])
    for name in ("delay", "timeout"):
        value = args.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidJob(f"{name} must be a number of seconds")
    depends = args.get("depends_on")
    if depends is None:
        args["depends_on"] = ()
    elif not isinstance(depends, list):
        raise InvalidJob("depends_on must be a list of job ids")
    return args


def list_arguments(query: Any) -> dict[str, Any]:
    """A listing's filters from the query string (a scoped viewer's listing
    finds its organization's jobs by itself: job_list)."""
    unknown = sorted(set(query.keys()) - LIST_FILTERS)
    if unknown:
        raise InvalidJob(f"unknown filter(s): {', '.join(unknown)}")
    return {
        "state": query.get("state") or None,
        "job_type": query.get("job_type") or None,
        "queue": query.get("queue") or None,
        "organization": query.get("organization") or None,
        "since": parse_time("since", query.get("since")),
        "until": parse_time("until", query.get("until")),
        "limit": parse_int("limit", query.get("limit"), 50),
        "after_id": parse_int("after_id", query.get("after_id")),
    }


def routes(web: Web) -> list[Route]:
    run = web.scope.run

    @json_errors
    async def create(request: Request) -> Response:
        _write_allowed(web, request)
        body = await _body(request)
        job_type = body.get("job_type")
        if not isinstance(job_type, str) or not job_type:
            raise InvalidJob("job_type is required")
        viewer = await web.scope.viewer(request)
        args = enqueue_arguments(body, viewer.organization)
        payload = body.get("payload")
        result = await run(request, lambda c: pgjobs.enqueue(c, job_type, payload, **args))
        answer = {"id": result.id, "duplicate": result.duplicate}
        return JSON(answer, status_code=200 if result.duplicate else 201)

    @json_errors
    async def list_(request: Request) -> Response:
        filters = list_arguments(request.query_params)
        rows = plain_all(await run(request, lambda c: pgjobs.list_jobs(c, **filters)))
        more = len(rows) == filters["limit"] and rows
        return JSON({"jobs": rows, "next_after_id": rows[-1]["id"] if more else None})

    @json_errors
    async def get(request: Request) -> Response:
        ident = job_id(request.path_params["id"])
        return JSON(plain(await run(request, lambda c: pgjobs.get(c, ident))))

    @json_errors
    async def history(request: Request) -> Response:
        ident = job_id(request.path_params["id"])

        def read(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            pgjobs.get(conn, ident)  # 404 for a job that is not there or not visible
            return plain_all(pgjobs.history(conn, ident))

        return JSON({"id": ident, "events": await run(request, read)})

    def verb(fn: Callable[[psycopg.Connection[Any], int], str]) -> Handler:
        @json_errors
        async def act(request: Request) -> Response:
            _write_allowed(web, request)
            ident = job_id(request.path_params["id"])
            state = await run(request, lambda c: fn(c, ident))
            return JSON({"id": ident, "state": state})

        return act

    @json_errors
    async def metrics(request: Request) -> Response:
        return JSON(await run(request, pgjobs.metrics))

    @json_errors
    async def events(request: Request) -> Response:
        ident = job_id(request.path_params["id"])
        return await job_events(web, request, ident)

    async def openapi(request: Request) -> Response:
        return JSON(document(web.allow_actions))

    return [
        Route("/api/jobs", create, methods=["POST"]),
        Route("/api/jobs", list_, methods=["GET"]),
        Route("/api/jobs/{id}", get, methods=["GET"]),
        Route("/api/jobs/{id}/history", history, methods=["GET"]),
        Route("/api/jobs/{id}/cancel", verb(pgjobs.cancel), methods=["POST"]),
        Route("/api/jobs/{id}/retry", verb(pgjobs.retry), methods=["POST"]),
        Route("/api/jobs/{id}/events", events, methods=["GET"]),
        Route("/api/metrics", metrics, methods=["GET"]),
        Route("/api/openapi.json", openapi, methods=["GET"]),
    ]


LIVE_FIELDS = ("id", "state", "progress", "progress_message", "attempt", "max_attempts",
               "started_at", "finished_at", "last_error", "canceled_by")  # fmt: skip


async def job_events(web: Web, request: Request, ident: int) -> Response:
    """SSE of one job: a ``job`` event each time what the viewer can read of it
    changes, then ``end`` once it is finished. 404 before the stream starts."""
    await web.scope.run(request, lambda c: pgjobs.get(c, ident))
    viewer = await web.scope.viewer(request)

    async def read() -> tuple[str, Any, bool]:
        try:
            row = plain(await web.scope.run(request, lambda c: pgjobs.get(c, ident)))
        except JobNotFound:
            return "gone", {"id": ident}, True
        live = {k: row.get(k) for k in LIVE_FIELDS}
        return "job", live, row["state"] in TERMINAL

    waiter = sse.Waiter(ident, viewer.organization)
    body = sse.stream(web.listener, waiter, read, poll_seconds=web.poll_seconds)
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
