"""sql/schema/ and sql/migrations/ describe one database.

A fresh install applies the schema files; an existing database upgrades
through the migrations. The two must build the same catalog, object by
object: functions with their bodies and settings, tables, columns and
defaults, constraints, indexes, triggers, policies, views and their options,
sequences, owners, grants, storage options and comments.
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pgjobs import db, sql
from pgjobs.migrate import migrate

Catalog = dict[str, list[tuple[Any, ...]]]

# Arrays whose order means nothing (ACLs, settings, storage options) are
# sorted; OIDs never appear, every object is named by its schema-qualified name.
# Some servers stamp a per-relation pg_attver into every column's options: not
# a setting of ours, so it is left out.
_SORTED = "(select array_agg(x order by x) from unnest({}::text[]) x)"
_CATALOG_QUERIES: dict[str, str] = {
    "schema": f"""
        select n.nspname, n.nspowner::regrole::text, {_SORTED.format("n.nspacl")}
          from pg_namespace n where n.nspname = 'pgjobs'""",
    "relations": f"""
        select c.relname, c.relkind, c.relowner::regrole::text, c.relpersistence,
               c.relrowsecurity, c.relforcerowsecurity, c.relreplident,
               {_SORTED.format("c.reloptions")}, {_SORTED.format("c.relacl")}
          from pg_class c where c.relnamespace = 'pgjobs'::regnamespace""",
    "columns": f"""
        select c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, a.attidentity, a.attgenerated, a.attcollation::regcollation::text,
               pg_get_expr(d.adbin, d.adrelid), {_SORTED.format("a.attacl")},
               (select array_agg(x order by x) from unnest(a.attoptions) x
                 where x not like 'pg_attver=%')
          from pg_attribute a
          join pg_class c on c.oid = a.attrelid
          left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
         where c.relnamespace = 'pgjobs'::regnamespace and a.attnum > 0
           and not a.attisdropped and c.relkind in ('r', 'v', 'm', 'p', 'f', 'c')""",
    "constraints": """
        select conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid),
               condeferrable, condeferred, convalidated
          from pg_constraint where connamespace = 'pgjobs'::regnamespace""",
    "indexes": """
        select i.indrelid::regclass::text, pg_get_indexdef(i.indexrelid), i.indisprimary,
               i.indisunique, i.indisvalid, i.indisclustered
          from pg_index i join pg_class c on c.oid = i.indexrelid
         where c.relnamespace = 'pgjobs'::regnamespace""",
    "triggers": """
        select t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
          from pg_trigger t join pg_class c on c.oid = t.tgrelid
         where c.relnamespace = 'pgjobs'::regnamespace and not t.tgisinternal""",
    "policies": """
        select tablename, policyname, permissive, roles::text, cmd, qual, with_check
          from pg_policies where schemaname = 'pgjobs'""",
    "views": """
        select c.relname, pg_get_viewdef(c.oid, true)
          from pg_class c
         where c.relnamespace = 'pgjobs'::regnamespace and c.relkind in ('v', 'm')""",
    "rules": """
        select tablename, rulename, definition from pg_rules where schemaname = 'pgjobs'""",
    "functions": f"""
        select p.oid::regprocedure::text, pg_get_function_arguments(p.oid),
               pg_get_function_result(p.oid), p.prokind, l.lanname, p.provolatile,
               p.proparallel, p.proisstrict, p.prosecdef, p.proleakproof, p.procost,
               p.prorows, {_SORTED.format("p.proconfig")}, p.prosrc,
               p.proowner::regrole::text, {_SORTED.format("p.proacl")}
          from pg_proc p join pg_language l on l.oid = p.prolang
         where p.pronamespace = 'pgjobs'::regnamespace""",
    "sequences": """
        select s.seqrelid::regclass::text, format_type(s.seqtypid, null), s.seqstart,
               s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle,
               (select concat(d.refobjid::regclass, '.', a.attname, ' ', d.deptype)
                  from pg_depend d
                  join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
                 where d.classid = 'pg_class'::regclass and d.objid = s.seqrelid
                   and d.deptype in ('a', 'i'))
          from pg_sequence s join pg_class c on c.oid = s.seqrelid
         where c.relnamespace = 'pgjobs'::regnamespace""",
    "types": """
        select t.typname, t.typtype, t.typowner::regrole::text,
               pg_catalog.format_type(t.oid, null)
          from pg_type t
         where t.typnamespace = 'pgjobs'::regnamespace and t.typelem = 0
           and (t.typrelid = 0
                or (select c.relkind from pg_class c where c.oid = t.typrelid) = 'c')""",
    "comments": """
        select pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description
          from pg_description d
         where (d.classoid = 'pg_class'::regclass and d.objoid in
                   (select oid from pg_class where relnamespace = 'pgjobs'::regnamespace))
            or (d.classoid = 'pg_proc'::regclass and d.objoid in
                   (select oid from pg_proc where pronamespace = 'pgjobs'::regnamespace))
            or (d.classoid = 'pg_namespace'::regclass
                and d.objoid = 'pgjobs'::regnamespace)""",
    "default_privileges": """
        select defaclrole::regrole::text, defaclobjtype, defaclacl::text
          from pg_default_acl where defaclnamespace = 'pgjobs'::regnamespace""",
}


def catalog(dsn: str) -> Catalog:
    """Every pgjobs object of the database, as sorted rows per kind of object."""
    with psycopg.connect(dsn) as conn:
        return {
            kind: sorted(
                (tuple(row) for row in conn.execute(query)),  # type: ignore[arg-type]
                key=repr,
            )
            for kind, query in _CATALOG_QUERIES.items()
        }


def catalog_diff(a: Catalog, b: Catalog, a_name: str, b_name: str) -> str:
    """A unified diff of the rows that differ, per kind of object ('' if none)."""
    lines: list[str] = []
    for kind in _CATALOG_QUERIES:
        left = [repr(r) for r in a[kind]]
        right = [repr(r) for r in b[kind]]
        if left != right:
            lines += difflib.unified_diff(
                left, right, f"{a_name}: {kind}", f"{b_name}: {kind}", lineterm="", n=0
            )
    return "\n".join(lines)


@pytest.fixture
def bare_database(server_dsn: str) -> Iterator[Callable[[], str]]:
    """Makes empty databases (no pgjobs schema) on demand; drops them all after."""
    names: list[str] = []

    def make() -> str:
        name = f"pgjobs_test_bare_{os.getpid()}_{secrets.token_hex(4)}"
        names.append(name)
        db.create_database(server_dsn, name)
        return db.with_dbname(server_dsn, name)

    try:
        yield make
    finally:
        for name in names:
            db.drop_database(server_dsn, name)


def _built(dsn: str, *, from_schema: bool) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, from_schema=from_schema)
    return dsn


@pytest.mark.slow
def test_schema_files_and_migrations_build_the_same_catalog(
    bare_database: Callable[[], str],
) -> None:
    from_schema = catalog(_built(bare_database(), from_schema=True))
    from_migrations = catalog(_built(bare_database(), from_schema=False))

    diff = catalog_diff(from_migrations, from_schema, "migrations", "schema")
    assert diff == "", f"sql/schema/ and sql/migrations/ disagree:\n{diff}"
    # The comparison saw the objects it compares.
    assert len(from_schema["functions"]) >= 25
    assert any(r[0] == "jobs" and r[7] for r in from_schema["relations"])  # reloptions
    assert len(from_schema["policies"]) >= 4
    assert len(from_schema["views"]) >= 6


# Migrations that landed after higher-numbered ones: a database of the release
# before got the higher ones first, and gets these last. Each maps to the
# migrations that landed later still, which that release's database lacked too
# (0010 and 0045, the trust boundary, landed after 0011-0013 and 0020-0040).
_LANDED_OUT_OF_ORDER = {9: (10,), 10: (45,)}
# Numbers handed out after 0009 landed: every database gets them after it.
_NUMBERED_AFTER_THEY_LANDED = 20


@pytest.mark.slow
@pytest.mark.parametrize("version", list(_LANDED_OUT_OF_ORDER))
def test_a_migration_applied_after_later_numbers_builds_the_same_catalog(
    bare_database: Callable[[], str], version: int
) -> None:
    dsn = bare_database()
    later = set(_LANDED_OUT_OF_ORDER[version])
    if version == 9:  # its release had none of the numbers handed out after it
        later |= {m.version for m in sql.migrations() if m.version >= _NUMBERED_AFTER_THEY_LANDED}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for step in sql.migrations():
            if step.version == version or step.version in later:
                continue
            with conn.transaction():
                conn.execute(step.sql.encode())
                if step.version > 0:  # 0000_bootstrap is the ledger itself
                    conn.execute(
                        sql.query("migration_record"), {"version": step.version, "name": step.name}
                    )
        applied = [int(a.split("_")[0]) for a in migrate(conn)]
        assert applied == sorted({version} | later)
    from_schema = catalog(_built(bare_database(), from_schema=True))
    diff = catalog_diff(catalog(dsn), from_schema, f"{version:04d} last", "schema")
    assert diff == "", f"applied after the later migrations, {version:04d} differs:\n{diff}"


@pytest.mark.slow
def test_catalog_comparison_sees_a_function_setting_and_a_grant(
    bare_database: Callable[[], str],
) -> None:
    """The comparison is not blind: one reset setting or one grant more shows."""
    dsn = _built(bare_database(), from_schema=True)
    before = catalog(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("alter function pgjobs.jobs_after_update() reset enable_seqscan")
        conn.execute("grant select on pgjobs.workers to pgjobs_app")
    diff = catalog_diff(before, catalog(dsn), "before", "after")
    assert "enable_seqscan=off" in diff
    assert "pgjobs_app=r/" in diff


def test_every_migration_is_recorded_by_a_fresh_install(
    bare_database: Callable[[], str],
) -> None:
    dsn = _built(bare_database(), from_schema=True)
    with psycopg.connect(dsn) as conn:
        ledger = conn.execute("select version, name from pgjobs.schema_migrations").fetchall()
    assert sorted(ledger) == [(m.version, m.name) for m in sql.migrations()[1:]]


_CREATED = re.compile(
    r"^create\s+(?:or\s+replace\s+)?(function|view|table|sequence|index|trigger)\s+"
    r"(?:if\s+not\s+exists\s+)?([a-z0-9_.]+)",
    re.IGNORECASE | re.MULTILINE,
)


def test_schema_files_define_each_object_once() -> None:
    seen: dict[tuple[str, str], str] = {}
    twice = []
    for part in sql.schema():
        for kind, name in _CREATED.findall(part.sql):
            key = (kind.lower(), name.lower())
            if key in seen:
                twice.append(f"{kind} {name}: {seen[key]} and {part.name}")
            seen[key] = part.name
    assert twice == []
    assert ("function", "pgjobs.jobs_before_insert") in seen


def test_schema_files_apply_in_their_numbered_order() -> None:
    names = [part.name for part in sql.schema()]
    assert names == sorted(names)
    assert names[0] == "00_ledger", "the ledger comes first: migrate runs it before any lock"
