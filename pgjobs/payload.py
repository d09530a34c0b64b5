"""Payloads are JSON objects, encoded one canonical way, with documented limits.

- ``datetime``/``date``/``time`` become ISO 8601 strings, ``UUID`` its string,
  ``Decimal`` its exact string (no float rounding), tuples become arrays;
- anything else that is not JSON (sets, bytes, objects, NaN, infinity) is an
  ``InvalidJob``; nothing is pickled or eval'd;
- floats of magnitude 2**53 or more are refused: jsonb would hand them back as
  integers with other digits; ints must be below 10**300 in magnitude (the
  database refuses more digits: Python cannot read back an int of 4,300);
- at most ``MAX_PAYLOAD_BYTES`` of JSON and ``MAX_DEPTH`` levels of nesting;
- strings may not hold NUL (``\\u0000``): PostgreSQL's jsonb cannot store it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

from pgjobs.errors import InvalidJob
from pgjobs.limits import MAX_INTEGER_DIGITS

MAX_PAYLOAD_BYTES = 1_048_576  # matches pgjobs.max_payload_bytes() in SQL
MAX_DEPTH = 32
# jsonb keeps numbers as decimals and prints floats this large without an
# exponent, so they would come back as ints: refused to keep round trips exact.
_FLOAT_EXACT_LIMIT = 2.0**53
_INT_LIMIT = 10**MAX_INTEGER_DIGITS


def _default(value: object) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise InvalidJob(f"payload holds a non-finite Decimal: {value}")
        return str(value)
    raise InvalidJob(f"payload holds a {type(value).__name__}, which is not JSON")


def _check(value: object, depth: int) -> None:
    # The usual JSON types by their exact type first (an isinstance test
    # against an abstract class such as Mapping costs more than the dump
    # itself); anything else, and anything at the depth limit, takes the
    # general test.
    kind = type(value)
    if kind is dict and depth < MAX_DEPTH:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is str and type(item) is str:  # depth + 1: within the limit
                if "\x00" in key or "\x00" in item:
                    raise InvalidJob("payload strings may not contain NUL (\\u0000)")
            else:
                if not isinstance(key, str):
                    raise InvalidJob(f"payload keys must be strings, got {type(key).__name__}")
                _check(key, depth + 1)
                _check(item, depth + 1)
    elif kind is str and depth <= MAX_DEPTH:
        if "\x00" in value:  # type: ignore[operator]
            raise InvalidJob("payload strings may not contain NUL (\\u0000)")
    elif kind is int and depth <= MAX_DEPTH:
        if abs(value) >= _INT_LIMIT:  # type: ignore[arg-type]
            _check_any(value, depth)
    elif kind is not type(None) or depth > MAX_DEPTH:
        _check_any(value, depth)


def _check_any(value: object, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidJob(f"payload is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidJob("payload strings may not contain NUL (\\u0000)")
    elif isinstance(value, int) and not isinstance(value, bool):
        if abs(value) >= _INT_LIMIT:
            raise InvalidJob(
                f"payload holds an integer of {MAX_INTEGER_DIGITS} or more digits; "
                "pass it as a string"
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidJob(f"payload holds {value}, which is not JSON")
        if abs(value) >= _FLOAT_EXACT_LIMIT:
            raise InvalidJob(
                f"payload holds the float {value!r}: jsonb would return it as an integer "
                "with other digits; pass an int or a string"
            )
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidJob(f"payload keys must be strings, got {type(key).__name__}")
            _check(key, depth + 1)
            _check(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _check(item, depth + 1)


def encode(payload: object, *, what: str = "payload") -> str:
    """The JSON text stored for a payload (or a result); raises InvalidJob."""
    if payload is None:
        payload = {}
    if what == "payload" and type(payload) is not dict and not isinstance(payload, Mapping):
        raise InvalidJob(f"payload must be a JSON object (a dict), got {type(payload).__name__}")
    _check(payload, 1)
    try:
        text = json.dumps(
            payload, default=_default, allow_nan=False, ensure_ascii=False, separators=(",", ":")
        )
    except RecursionError as exc:
        raise InvalidJob(f"{what} is nested too deeply") from exc
    except ValueError as exc:
        raise InvalidJob(f"{what} is not JSON: {exc}") from exc
    try:
        size = len(text.encode())
    except UnicodeEncodeError as exc:
        raise InvalidJob(f"{what} holds text that is not valid Unicode") from exc
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidJob(f"{what} is larger than {MAX_PAYLOAD_BYTES} bytes of JSON")
    return text


def decode_cli(text: str) -> dict[str, Any]:
    """A payload given as JSON text (CLI, files)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidJob(f"payload is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidJob("payload must be a JSON object")
    return value


def check_text(name: str, value: str | None, *, max_length: int = 1000) -> None:
    """Text fields (organization, dedup key, queue...) are stored verbatim, within reason."""
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidJob(f"{name} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidJob(f"{name} may not contain NUL (\\x00)")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            raise InvalidJob(f"{name} is not valid Unicode text: {exc.reason}") from exc
    if len(value) > max_length:
        raise InvalidJob(f"{name} is longer than {max_length} characters")
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise InvalidJob(f"{name} is not valid Unicode text") from exc
