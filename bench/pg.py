"""The shared Postgres server: throwaway databases, settings, table statistics."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgjobs import db

# Every database a run makes carries this prefix, the pid and a random part,
# so two runs (or the smoke test beside `make bench`) never meet.
PREFIX = f"bench_{os.getpid()}_{secrets.token_hex(2)}"

SETTINGS = (
    "server_version",
    "shared_buffers",
    "work_mem",
    "max_connections",
    "synchronous_commit",
    "fsync",
    "wal_level",
    "max_wal_size",
    "checkpoint_timeout",
    "autovacuum",
    "autovacuum_vacuum_scale_factor",
    "autovacuum_naptime",
    "random_page_cost",
    "effective_io_concurrency",
    "jit",
)


def admin_dsn() -> str:
    """``BENCH_DSN``, else the server the test suite uses."""
    return os.environ.get("BENCH_DSN") or db.test_server_dsn()


def database_name(label: str) -> str:
    return f"{PREFIX}_{label}"[:63]


def create(admin: str, name: str, template: str | None = None) -> str:
    db.create_database(admin, name, template=template)
    return db.with_dbname(admin, name)


def drop(admin: str, name: str) -> None:
    db.drop_database(admin, name)


@contextlib.contextmanager
def database(admin: str, name: str, template: str | None = None) -> Iterator[str]:
    """A database that exists for the block and is dropped after it, even on error."""
    drop(admin, name)
    try:
        yield create(admin, name, template)
    finally:
        drop(admin, name)


def server_settings(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select name, setting || coalesce(' ' || unit, '') from pg_settings"
            " where name = any(%s)",
            [list(SETTINGS)],
        ).fetchall()
    found = dict(rows)
    return {name: found.get(name, "?") for name in SETTINGS}


# What a private cluster copies from the server it stands in for: the
# settings that decide a commit's cost, memory and vacuum.
MIRRORED = (
    *(name for name in SETTINGS if name not in ("server_version", "max_connections")),
    "full_page_writes",
)


def mirrored_settings(dsn: str) -> dict[str, str]:
    """``dsn``'s server's MIRRORED settings, as postgresql.conf takes them."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select name, setting from pg_settings where name = any(%s)", [list(MIRRORED)]
        ).fetchall()
    return dict(rows)


def table_stats(conn: psycopg.Connection[Any], tables: tuple[str, ...]) -> dict[str, float]:
    """Over ``tables`` (schema.name), each summed over its partitions when it
    is partitioned (pg_partition_tree gives no rows for a plain table): live
    and dead tuples, total, heap and index sizes (MB), and two counters (the
    caller takes differences): ``buffers``, the shared buffers heap and index
    scans touched (hits and reads), and ``reads``, those of them read in (not
    found in shared buffers); ``index_entries``, the index entries their index
scans returned, live or dead (a claim stepping over dead ones counts each).
``schema_mb``: every table of those schemas with
    its indexes and TOAST."""
    row = conn.execute(
        "with leaf as (select coalesce(p.relid, t.name::regclass) as relid"
        "                from unnest(%s::text[]) t(name) left join lateral"
        "                     (select relid from pg_partition_tree(t.name::regclass)"
        "                       where isleaf) p on true)"
        " select coalesce(sum(s.n_live_tup), 0), coalesce(sum(s.n_dead_tup), 0),"
        "       coalesce(sum(pg_total_relation_size(s.relid)), 0),"
        "       coalesce(sum(pg_relation_size(s.relid)), 0),"
        "       coalesce(sum(pg_indexes_size(s.relid)), 0),"
        "       coalesce(sum(coalesce(i.heap_blks_read, 0) + coalesce(i.heap_blks_hit, 0)"
        "                    + coalesce(i.idx_blks_read, 0) + coalesce(i.idx_blks_hit, 0)), 0),"
        "       coalesce(sum(coalesce(i.heap_blks_read, 0) + coalesce(i.idx_blks_read, 0)), 0),"
        "       coalesce(sum((select sum(x.idx_tup_read) from pg_stat_user_indexes x"
        "                      where x.relid = s.relid)), 0),"
        "       (select coalesce(sum(pg_total_relation_size(c.oid)), 0) from pg_class c"
        "         where c.relkind = 'r' and c.relnamespace::regnamespace::text"
        "               = any(select split_part(n, '.', 1) from unnest(%s::text[]) n))"
        "  from leaf join pg_stat_user_tables s using (relid)"
        "  join pg_statio_user_tables i using (relid)",
        [list(tables), list(tables)],
    ).fetchone()
    assert row is not None
    return {"live": float(row[0]), "dead": float(row[1]), "size_mb": float(row[2]) / 2**20,
            "heap_mb": float(row[3]) / 2**20, "index_mb": float(row[4]) / 2**20,
            "buffers": float(row[5]), "reads": float(row[6]),
            "index_entries": float(row[7]), "schema_mb": float(row[8]) / 2**20}


def settle(dsn: str, tables: tuple[str, ...]) -> None:
    """VACUUM ANALYZE ``tables`` as autovacuum would have (hint bits set, the
    visibility map made), then a CHECKPOINT, so that a run starts with no
    write-back of what came before still due."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("vacuum analyze " + ", ".join(tables))  # type: ignore[arg-type]
        conn.execute("checkpoint")


def uri(dsn: str) -> str:
    """The DSN as a postgresql:// URI, for drivers that take no key=value form (asyncpg)."""
    from urllib.parse import quote

    p = conninfo_to_dict(dsn)
    auth = quote(str(p.get("user", "")), safe="")
    if p.get("password"):
        auth += ":" + quote(str(p["password"]), safe="")
    host = str(p.get("host", "localhost"))
    port = f":{p['port']}" if p.get("port") else ""
    return f"postgresql://{auth}{'@' if auth else ''}{host}{port}/{quote(str(p.get('dbname', '')))}"
