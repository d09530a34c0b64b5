"""How the CLI prints rows: aligned tables for people, JSON lines for programs;
text from the database passes through :func:`pgjobs.terminal.printable`."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from pgjobs.terminal import printable

Echo = Callable[[Any], None]


def print_rows(echo: Echo, rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    """Rows as an aligned table, or as JSON lines."""
    if as_json:
        for row in rows:
            echo(json.dumps(row, default=json_default, ensure_ascii=False))
        return
    table = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in table]) for i, c in enumerate(columns)]
    echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in table:
        echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, float):
        return f"{value:.1f}"
    text = printable(str(value))
    return text if len(text) <= 60 else text[:57] + "..."


def json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else str(value)
