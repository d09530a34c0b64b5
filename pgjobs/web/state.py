"""What every route shares: the scoped pool, the listener, the settings."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from starlette.requests import Request

from pgjobs.errors import AccessDenied, InvalidJob
from pgjobs.web.scope import Scope
from pgjobs.web.sse import Listener


class ReadOnly(AccessDenied):
    """The app was made without allow_actions: no enqueue, cancel or retry."""


class CrossSite(AccessDenied):
    """A write from another site's page, or a form without a matching CSRF token."""


@dataclasses.dataclass
class Web:
    scope: Scope
    listener: Listener
    allow_actions: bool
    poll_seconds: float

    def require_actions(self) -> None:
        if not self.allow_actions:
            raise ReadOnly("this dashboard is read-only (start it with allow_actions)")


def base(request: Request) -> str:
    """The prefix the app is mounted under ('' when served on its own)."""
    return str(request.scope.get("root_path") or "").rstrip("/")


def job_id(text: str) -> int:
    if not text.isdigit() or len(text) > 18 or int(text) <= 0:
        raise InvalidJob(f"a job id is a positive integer, got {text!r}")
    return int(text)


def parse_time(name: str, value: Any) -> dt.datetime | None:
    """ISO 8601 with a time zone (a bare date or naive time is read as UTC)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidJob(f"{name} must be an ISO 8601 string")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidJob(f"{name} is not an ISO 8601 time: {value!r}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def parse_int(name: str, value: Any, default: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.isdigit() and len(value) <= 18:
        return int(value)
    raise InvalidJob(f"{name} must be a whole number, got {value!r}")
