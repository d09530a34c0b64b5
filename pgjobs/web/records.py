"""The one adapter between pgjobs' records and what the web layer renders.

pgjobs.get/list_jobs/history return rows with item access (dicts today, frozen
records with item access kept tomorrow): everything here goes through
:func:`plain`, so a change of record type touches this file only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.responses import Response


def plain(record: Any) -> dict[str, Any]:
    """A record (mapping, dataclass or named tuple) as a plain dict."""
    if isinstance(record, Mapping):
        return dict(record)
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    as_dict = getattr(record, "_asdict", None)
    if callable(as_dict):
        return dict(as_dict())
    raise TypeError(f"pgjobs.web: cannot read a {type(record).__name__} as a record")


def plain_all(records: Iterable[Any]) -> list[dict[str, Any]]:
    return [plain(r) for r in records]


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def dumps(value: Any) -> str:
    return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":"))


class JSON(Response):
    """JSON with datetimes as ISO 8601 and decimals as numbers."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content).encode()


def error(status: int, message: str, kind: str) -> JSON:
    return JSON({"error": message, "type": kind}, status_code=status)
