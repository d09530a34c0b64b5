"""The migration runner's statements (``sql/queries/migrate.sql``)."""

from __future__ import annotations

from typing import Any

from pgjobs.statements.base import Params, flag, nothing, statement


@statement("migration_lock", nothing)
def lock(*, key: int) -> Params:
    """Waits for the lock that serializes concurrent migrate runs on a database."""
    return {"key": key}


@statement("migration_unlock", nothing)
def unlock(*, key: int) -> Params:
    return {"key": key}


@statement("migration_table_exists", flag)
def table_exists() -> None:
    return None


def _versions(found: list[Any]) -> set[int]:
    return {row[0] for row in found}


@statement("migration_versions", _versions)
def versions() -> None:
    return None


@statement("migration_record", nothing, fetch=False)
def record(*, version: int, name: str) -> Params:
    return {"version": version, "name": name}
