"""System schedules declared with their handler:
``@pgjobs.job("nightly_report", schedule="0 6 * * *", timezone="Europe/Berlin")``.

Written whenever the job type is (worker start, ``registry.sync``), as the
system schedule (no organization) named after the type. Writing it again
with the same cron and zone keeps its next fire time, so a restart never
skips a tick that is due.
"""

from __future__ import annotations

from typing import Any

import psycopg

from pgjobs import sql
from pgjobs.errors import translated


def declare(conn: psycopg.Connection[Any], job_type: str, cron: str, timezone: str) -> None:
    with translated():
        conn.execute(
            sql.query("schedule_declare"),
            {"name": job_type, "cron": cron, "timezone": timezone},
        )
