"""Loads the SQL that lives in ``sql/``: the current schema, the migrations and
the named runtime queries.

Python holds no SQL text; it asks for a query by name (``query("job_claim")``).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, LiteralString, NamedTuple

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_SCHEMA_FILE = re.compile(r"^(\d{2})_([a-z0-9_]+)\.sql$")


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


class SchemaFile(NamedTuple):
    name: str
    sql: str


def sql_dir() -> Path:
    """The packaged copy in a wheel, else the repository's top-level ``sql/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "sql", here.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError("pgjobs: cannot find the sql/ directory")


def parse_queries(text: str) -> dict[str, str]:
    """Splits a file into ``{name: statement}`` at ``-- name: x`` headers."""
    queries: dict[str, str] = {}
    matches = list(_NAME.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip().rstrip(";").strip()
        name = match.group(1)
        if name in queries:
            raise ValueError(f"pgjobs: query {name!r} is defined twice")
        queries[name] = body
    return queries


@functools.cache
def queries() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        for name, body in parse_queries(path.read_text()).items():
            if name in found:
                raise ValueError(f"pgjobs: query {name!r} is defined twice")
            found[name] = body
    return found


def query(name: str) -> LiteralString:
    """The statement registered under ``name``; the text comes from our own files."""
    text: Any = queries()[name]
    return text  # type: ignore[no-any-return]


@functools.cache
def migrations() -> tuple[Migration, ...]:
    found = []
    for path in sorted((sql_dir() / "migrations").glob("*.sql")):
        match = _MIGRATION.match(path.name)
        if not match:
            raise ValueError(f"pgjobs: migration file {path.name!r} is not NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError("pgjobs: two migrations share a number")
    return tuple(found)


@functools.cache
def schema() -> tuple[SchemaFile, ...]:
    """The files of ``sql/schema/`` in the order they apply (``NN_concern.sql``)."""
    found = []
    for path in sorted((sql_dir() / "schema").glob("*.sql")):
        if not _SCHEMA_FILE.match(path.name):
            raise ValueError(f"pgjobs: schema file {path.name!r} is not NN_name.sql")
        found.append(SchemaFile(path.stem, path.read_text()))
    if not found:
        raise FileNotFoundError("pgjobs: sql/schema/ holds no files")
    return tuple(found)
