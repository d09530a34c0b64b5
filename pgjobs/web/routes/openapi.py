"""The OpenAPI 3.1 document of the JSON API (served at /api/openapi.json)."""

from __future__ import annotations

from typing import Any

_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
_ERROR = {
    "type": "object",
    "required": ["error", "type"],
    "properties": {
        "error": {"type": "string"},
        "type": {"enum": ["invalid", "not_found", "wrong_state", "denied", "unavailable"]},
    },
}
_STATES = ["waiting", "queued", "running", "retrying", "completed", "dead", "canceled"]


def _err(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_BAD = _err("invalid input (pgjobs.InvalidJob)")
_MISSING = _err("no such job, or another organization's (pgjobs.JobNotFound)")
_STATE = _err("the job is not in a state that allows this (pgjobs.InvalidTransition)")
_DENIED = _err("read-only dashboard, cross-site write, or the job type's cancel policy")
_JOB = {"$ref": "#/components/schemas/Job"}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


_LIST_PARAMS = [
    _query("state", {"enum": _STATES}, "only jobs in this state"),
    _query("job_type", {"type": "string"}, "only this job type"),
    _query("queue", {"type": "string"}, "only this queue"),
    _query("organization", {"type": "string"}, "operators: one organization"),
    _query("since", {"type": "string", "format": "date-time"}, "created at or after"),
    _query("until", {"type": "string", "format": "date-time"}, "created before"),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 50}, "page"),
    _query("after_id", {"type": "integer"}, "keyset: next_after_id of the previous page"),
]

_ENQUEUE = {
    "type": "object",
    "required": ["job_type"],
    "additionalProperties": False,
    "properties": {
        "job_type": {"type": "string"},
        "payload": {"type": "object"},
        "queue": {"type": "string"},
        "priority": {"type": "integer", "minimum": 0, "maximum": 3},
        "run_at": {"type": "string", "format": "date-time"},
        "delay": {"type": "number", "minimum": 0, "description": "seconds"},
        "dedup_key": {"type": "string"},
        "depends_on": {"type": "array", "items": {"type": "integer"}},
        "max_attempts": {"type": "integer", "minimum": 1},
        "timeout": {"type": "number", "minimum": 0, "description": "seconds; 0 = none"},
        "organization": {"type": "string", "description": "operator dashboards only"},
    },
}


def _paths() -> dict[str, Any]:
    verb = _ok("the job's new state", {"type": "object", "properties": {
        "id": {"type": "integer"}, "state": {"enum": _STATES}}})  # fmt: skip
    enqueued = {"type": "object", "properties": {
        "id": {"type": "integer"}, "duplicate": {"type": "boolean"}}}  # fmt: skip
    return {
        "/api/jobs": {
            "post": {
                "summary": "Enqueue a job (pgjobs.enqueue)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ENQUEUE}},
                },
                "responses": {
                    "201": _ok("created", enqueued),
                    "200": _ok("a live duplicate's id", enqueued),
                    "400": _BAD,
                    "403": _DENIED,
                },
            },
            "get": {
                "summary": "List jobs, newest first (pgjobs.list_jobs)",
                "parameters": _LIST_PARAMS,
                "responses": {
                    "200": _ok(
                        "a page of jobs",
                        {
                            "type": "object",
                            "properties": {
                                "jobs": {"type": "array", "items": _JOB},
                                "next_after_id": {"type": ["integer", "null"]},
                            },
                        },
                    ),
                    "400": _BAD,
                },
            },
        },
        "/api/jobs/{id}": {
            "get": {
                "summary": "One job (pgjobs.get)",
                "parameters": [_ID],
                "responses": {"200": _ok("the job", _JOB), "400": _BAD, "404": _MISSING},
            }
        },
        "/api/jobs/{id}/history": {
            "get": {
                "summary": "Every state change and attempt (pgjobs.history)",
                "parameters": [_ID],
                "responses": {
                    "200": _ok(
                        "events, oldest first",
                        {
                            "type": "object",
                            "properties": {
                                "id": {"type": "integer"},
                                "events": {"type": "array", "items": {"type": "object"}},
                            },
                        },
                    ),
                    "400": _BAD,
                    "404": _MISSING,
                },
            }
        },
        "/api/jobs/{id}/cancel": {
            "post": {
                "summary": "Cancel (pgjobs.cancel)",
                "parameters": [_ID],
                "responses": {
                    "200": verb,
                    "400": _BAD,
                    "403": _DENIED,
                    "404": _MISSING,
                    "409": _STATE,
                },
            }
        },
        "/api/jobs/{id}/retry": {
            "post": {
                "summary": "Retry a dead or canceled job (pgjobs.retry)",
                "parameters": [_ID],
                "responses": {
                    "200": verb,
                    "400": _BAD,
                    "403": _DENIED,
                    "404": _MISSING,
                    "409": _STATE,
                },
            }
        },
        "/api/jobs/{id}/events": {
            "get": {
                "summary": "Server-sent events: `job` on each change, `end` once finished",
                "parameters": [_ID],
                "responses": {
                    "200": {"description": "an event stream", "content": {"text/event-stream": {}}},
                    "400": _BAD,
                    "404": _MISSING,
                },
            }
        },
        "/api/metrics": {
            "get": {
                "summary": "Queue metrics (pgjobs.metrics)",
                "responses": {"200": _ok("metrics", {"type": "object"})},
            }
        },
    }


def document(allow_actions: bool) -> dict[str, Any]:
    mode = "Writes are enabled." if allow_actions else "Read-only: writes answer 403."
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pgjobs",
            "version": "1",
            "description": "Jobs of the caller's organization, through row-level security. " + mode,
        },
        "paths": _paths(),
        "components": {
            "schemas": {
                "Error": _ERROR,
                "Job": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "job_type": {"type": "string"},
                        "organization": {"type": ["string", "null"]},
                        "queue": {"type": "string"},
                        "state": {"enum": _STATES},
                        "progress": {"type": ["number", "null"]},
                        "created_by": {"type": ["string", "null"]},
                    },
                },
            }
        },
    }
