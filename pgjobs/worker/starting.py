"""Why a claimed job cannot start, as an attempt's outcome instead of a crash.

A job may be claimed and yet be impossible to start in this process: its
payload does not decode (a number past Python's digit limit, nesting past its
recursion limit), no handler for its type is registered here, or its own
transaction cannot be set up (a setting Postgres refuses). Each is a failed
attempt with an error class of its own: counted, recorded, retried by the
type's policy, while the process goes on with the next job.

The payload is the first of these to strike: psycopg decodes jsonb as it
fetches the claim's rows, so one bad row used to end the process with the
whole batch leased and uncounted. The worker's claim session decodes with
:func:`tolerant_loads`, which turns a payload it cannot read into an
:class:`Undecodable` marker that only this job's attempt sees.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import set_json_loads

from pgjobs.registry import Registry
from pgjobs.statements import ClaimedJob, Failed

UNDECODABLE = "undecodable_payload"
NOT_REGISTERED = "handler_not_registered"
SETUP_FAILED = "job_setup_failed"


class Undecodable:
    """A jsonb value this process could not decode, with the reason."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Undecodable({self.reason!r})"


class JobSetupFailed(Exception):
    """The job's own transaction could not be set up; its session was reset."""


def tolerant_loads(data: bytes | bytearray | str) -> Any:
    """json.loads, except that what it cannot decode becomes :class:`Undecodable`."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        return Undecodable(f"{type(exc).__name__}: {str(exc)[:200]}")


def decode_tolerantly(conn: psycopg.Connection[Any]) -> None:
    """Makes ``conn`` (the claim's session) decode json and jsonb tolerantly."""
    set_json_loads(tolerant_loads, conn)


def handler_or_refusal(job: ClaimedJob, types: Registry) -> Callable[..., Any] | Failed:
    """The handler registered in ``types`` for ``job``, or why the job cannot
    start in this process, as its attempt's outcome."""
    for what, value in (("payload", job.payload), ("checkpoint", job.checkpoint)):
        if isinstance(value, Undecodable):
            message = f"the job's {what} cannot be decoded: {value.reason}"
            return Failed(UNDECODABLE, message, None, False, 0.0)
    fn = types.handler(job.job_type)
    if fn is None:
        # The claim takes only this process's types: a registry changed since
        # the claim, or a caller that claims for any type (pgjobs.testing).
        message = f"no handler for job type {job.job_type!r} is registered in this process"
        return Failed(NOT_REGISTERED, message, None, False, 0.0)
    return fn
