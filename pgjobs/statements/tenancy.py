"""Tenant scope (``sql/queries/tenancy.sql``), transaction-local."""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

from pgjobs.statements.base import Params, nothing, scalar, statement


@statement("tenant_set", nothing, fetch=False)
def tenant_set(*, organization: str | None) -> Params:
    """Scopes the current transaction to ``organization`` (None clears it)."""
    return {"organization": organization or ""}


@statement("tenant_get", scalar)
def tenant_get() -> None:
    return None


class Entered(NamedTuple):
    """What ``tenant_enter`` found: the scope to restore and the transaction it was in."""

    previous: str
    began: dt.datetime


def _entered(found: list[Any]) -> Entered:
    previous, began, _ = found[0]
    return Entered(previous, began)


@statement("tenant_enter", _entered)
def tenant_enter(*, organization: str) -> Params:
    """Scopes the current transaction; returns what to restore afterwards."""
    return {"organization": organization}


@statement("tenant_restore", nothing)
def tenant_restore(entered: Entered) -> Params:
    """Puts back the scope ``tenant_enter`` found, in the same transaction only."""
    return entered._asdict()
