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


def table_stats(conn: psycopg.Connection[Any], tables: tuple[str, ...]) -> dict[str, float]:
    """Over ``tables`` (schema.name, a partitioned one as its partitions): live
    and dead tuples, total, heap and index sizes (MB), and the buffers read so
    far (shared hits and reads of heap and indexes, a counter: the caller
    takes differences)."""
    row = conn.execute(
        "select coalesce(sum(s.n_live_tup), 0), coalesce(sum(s.n_dead_tup), 0),"
        "       coalesce(sum(pg_total_relation_size(s.relid)), 0),"
        "       coalesce(sum(pg_relation_size(s.relid)), 0),"
        "       coalesce(sum(pg_indexes_size(s.relid)), 0),"
        "       coalesce(sum(coalesce(i.heap_blks_read, 0) + coalesce(i.heap_blks_hit, 0)"
        "                    + coalesce(i.idx_blks_read, 0) + coalesce(i.idx_blks_hit, 0)), 0)"
        "  from pg_stat_user_tables s join pg_statio_user_tables i using (relid)"
        # A partitioned table (pgjobs.jobs) counts as its partitions.
        " where s.relid in (select t.relid from unnest(%s::text[]) as n(name),"
        "                   pg_partition_tree(to_regclass(n.name)) as t)",
        [list(tables)],
    ).fetchone()
    assert row is not None
    return {"live": float(row[0]), "dead": float(row[1]), "size_mb": float(row[2]) / 2**20,
            "heap_mb": float(row[3]) / 2**20, "index_mb": float(row[4]) / 2**20,
            "buffers": float(row[5])}


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
