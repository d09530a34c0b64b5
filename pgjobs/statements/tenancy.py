"""Tenant scope (``sql/queries/tenancy.sql``), transaction-local."""

from __future__ import annotations

from pgjobs.statements.base import Params, nothing, scalar, statement


@statement("tenant_set", nothing, fetch=False)
def tenant_set(*, organization: str | None) -> Params:
    """Scopes the current transaction to ``organization`` (None clears it)."""
    return {"organization": organization or ""}


@statement("tenant_get", scalar)
def tenant_get() -> None:
    return None
