"""Tenant scope (``sql/queries/tenancy.sql``), transaction-local."""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

from pgjobs.statements.base import Params, nothing, scalar, statement


@statement("tenant_set", nothing, fetch=False)
def tenant_set(*, organization: str | None) -> Params:
    """Scopes the current transaction to ``organization`` (None clears it)."""
    return {"organization": organization or ""}


@statement("actor_set", nothing, fetch=False)
def actor_set(*, actor: str | None) -> Params:
    """Names who acts in the current transaction (None clears it)."""
    return {"actor": actor or ""}


@statement("tenant_get", scalar)
def tenant_get() -> None:
    return None


class Entered(NamedTuple):
    """What ``tenant_enter`` found: the scope and actor to restore, and the
    transaction they were found in."""

    previous: str
    previous_actor: str
    began: dt.datetime


def _entered(found: list[Any]) -> Entered:
    previous, previous_actor, began = found[0][:3]
    return Entered(previous, previous_actor, began)


@statement("tenant_enter", _entered)
def tenant_enter(*, organization: str, actor: str | None = None) -> Params:
    """Scopes the current transaction (acting as ``actor`` when given); returns
    what to restore afterwards."""
    return {"organization": organization, "actor": actor}


@statement("tenant_restore", nothing)
def tenant_restore(entered: Entered) -> Params:
    """Puts back the scope and actor ``tenant_enter`` found, in the same transaction only."""
    return entered._asdict()
