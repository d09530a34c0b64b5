"""The raw-SQL floor: pgbench running the minimal statements a queue needs
(bench/floor/*.sql) on a bare table; every figure is jobs/s."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench import pg

SCRIPTS = Path(__file__).with_name("floor")
CLAIM_SIZES = (1, 10, 100)
PREFILL_CAP = 200_000  # rows queued before a claim script; bounds its transactions


def pgbench_path() -> str | None:
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), reverse=True)
    return candidates[0] if candidates else None


class Floor:
    """Shares the claim-latency interface of a System (seed, claim_statement)."""

    name = "floor"

    def __init__(self, admin: str) -> None:
        self.admin = admin
        self.pgbench = pgbench_path()
        self.template = pg.database_name("floor_tpl")

    def available(self) -> bool:
        return self.pgbench is not None

    def prepare_template(self) -> None:
        pg.drop(self.admin, self.template)
        dsn = pg.create(self.admin, self.template)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute((SCRIPTS / "schema.sql").read_text())
            conn.execute((SCRIPTS / "work_schema.sql").read_text())

    def drop_template(self) -> None:
        pg.drop(self.admin, self.template)

    def fresh(self, label: str):  # type: ignore[no-untyped-def]
        return pg.database(self.admin, pg.database_name(f"floor_{label}"), self.template)

    # -- pgbench ------------------------------------------------------------

    def pgbench_rate(
        self, dsn: str, script: str, clients: int, transactions: int, rows: int
    ) -> float:
        """Jobs/s: pgbench's tps (connections excluded) times rows per transaction."""
        assert self.pgbench is not None
        params = conninfo_to_dict(dsn)
        env = dict(os.environ)
        for key, var in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER"),
                         ("password", "PGPASSWORD"), ("dbname", "PGDATABASE")):
            if params.get(key):
                env[var] = str(params[key])
        cmd = [
            self.pgbench, "-n", "-M", "prepared", "-c", str(clients), "-j", str(clients),
            "-t", str(transactions), "-D", f"n={rows}", "-f", str(SCRIPTS / script),
        ]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"pgbench {script}: {out.stderr.strip()[-500:]}")
        match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)
        if not match:
            raise RuntimeError(f"pgbench {script}: no tps in {out.stdout[-500:]}")
        return float(match.group(1)) * rows

    def run(self, clients: int, transactions: int) -> dict[str, float]:
        """Every floor figure at ``clients`` clients; the table is emptied and
        vacuumed before each script, so none inherits another's dead rows."""
        figures: dict[str, float] = {}
        with self.fresh(f"c{clients}") as dsn:
            self.seed(dsn, 0, 0)
            figures["insert_1"] = self.pgbench_rate(dsn, "insert_1.sql", clients, transactions, 1)
            self.seed(dsn, 0, 0)
            figures["insert_100"] = self.pgbench_rate(
                dsn, "insert_100.sql", clients, max(1, transactions // 10), 100
            )
            for finish in ("delete", "update"):
                for n in CLAIM_SIZES:
                    per_client = max(1, min(transactions, PREFILL_CAP // (clients * n)))
                    self.seed(dsn, 0, per_client * clients * n)
                    figures[f"claim_{n}_{finish}"] = self.pgbench_rate(
                        dsn, f"claim_{finish}.sql", clients, per_client, n
                    )
            figures.update(self.run_work(dsn, clients, transactions))
        return figures

    def run_work(self, dsn: str, clients: int, transactions: int) -> dict[str, float]:
        """The floor that does pgjobs' work per job (work_*.sql): a bulk insert
        with its wake-up, then a claim with a lease and history plus a
        token-guarded completion with history, per batch of 100, with a
        history row per state change and with one per attempt."""
        figures: dict[str, float] = {}
        self.seed_work(dsn, 0)
        figures["work_insert_100"] = self.pgbench_rate(
            dsn, "work_insert_100.sql", clients, max(1, transactions // 10), 100
        )
        n = 100
        per_client = max(1, min(transactions, PREFILL_CAP // (clients * n)))
        for script in ("work_claim_complete", "work_claim_complete_attempt"):
            self.seed_work(dsn, per_client * clients * n)
            figures[f"{script}_{n}"] = self.pgbench_rate(
                dsn, f"{script}.sql", clients, per_client, n
            )
        return figures

    def seed_work(self, dsn: str, queued: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("truncate work_jobs, work_events restart identity")
            conn.execute(
                "insert into work_jobs (payload) select '{}' from generate_series(1, %s)", [queued]
            )
            conn.execute("vacuum analyze work_jobs, work_events")

    # -- claim latency ------------------------------------------------------

    def seed(self, dsn: str, finished: int, queued: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("truncate jobs restart identity")
            conn.execute(
                "insert into jobs (state) select 'done' from generate_series(1, %s)", [finished]
            )
            conn.execute(
                "insert into jobs (state) select 'queued' from generate_series(1, %s)", [queued]
            )
            conn.execute("vacuum analyze jobs")

    def claim_statement(self, batch: int) -> str:
        return (
            "with c as (select id from jobs where state = 'queued'"
            f" order by priority, run_at, id limit {int(batch)} for update skip locked)"
            " update jobs j set state = 'running' from c where j.id = c.id returning j.id"
        )
