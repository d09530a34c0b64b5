"""Monitoring (``sql/queries/monitoring.sql``): subscribe's LISTENs and the
metrics behind ``pgjobs metrics`` and Prometheus."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from psycopg.rows import dict_row

from pgjobs.statements.base import Params, Statement, nothing, statement


def _plain(found: list[Any]) -> list[dict[str, Any]]:
    """Rows as dicts, numerics as floats (what JSON and Prometheus take)."""
    return [{k: float(v) if isinstance(v, Decimal) else v for k, v in row.items()} for row in found]


def _none() -> None:
    return None


def _metric(name: str) -> Statement[[], list[dict[str, Any]]]:
    return statement(name, _plain, row_factory=dict_row)(_none)


listen_events = statement("listen_events", nothing, fetch=False)(_none)
listen_progress = statement("listen_progress", nothing, fetch=False)(_none)
sees_all = _metric("metrics_sees_all")
queue_depth = _metric("metrics_queue_depth")
job_counts = _metric("metrics_job_counts")
processing_times = _metric("metrics_processing_times")
failure_rates = _metric("metrics_failure_rates")
workers = _metric("metrics_workers")
postgres_health = _metric("metrics_postgres_health")
unserved_job_types = _metric("metrics_unserved_job_types")


@statement("job_state_confirm", _plain, row_factory=dict_row)
def state_confirm(*, job_id: int) -> Params:
    """One job's id, organization, type, state and attempt, as the caller may see it."""
    return {"id": job_id}
