"""bench.held's A/B runs each checkout on its own schema, not only its workers."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg

from bench import held, pg
from bench.systems import ALL
from pgjobs import db

ROOT = Path(__file__).resolve().parents[1]


def _checkout_with_a_marker(where: Path) -> Path:
    """A copy of this checkout whose schema makes one table more."""
    for part in ("pgjobs", "sql", "bench"):
        shutil.copytree(ROOT / part, where / part, ignore=shutil.ignore_patterns("__pycache__"))
    last = sorted((where / "sql" / "schema").glob("*.sql"))[-1]
    with last.open("a") as f:
        f.write("\ncreate table pgjobs.variant_marker ();\n")
    return where


def test_a_variant_runs_on_the_schema_of_its_own_checkout(server_dsn, tmp_path):
    checkout = _checkout_with_a_marker(tmp_path / "checkout")
    system = ALL["pgjobs"]()
    templates = held.variant_templates(system, server_dsn, [["marked", str(checkout)]])
    try:
        with psycopg.connect(db.with_dbname(server_dsn, templates["marked"])) as conn:
            row = conn.execute("select to_regclass('pgjobs.variant_marker') is not null").fetchone()
        assert row == (True,)
    finally:
        for name in templates.values():
            pg.drop(server_dsn, name)
