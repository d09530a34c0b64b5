"""Queue metrics from the views, for ``pgjobs metrics`` and Prometheus."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgjobs import _conn, sql


def _rows(conn: psycopg.Connection[Any], name: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [
            {k: float(v) if isinstance(v, Decimal) else v for k, v in row.items()}
            for row in cur.execute(sql.query(name)).fetchall()
        ]


def metrics(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Everything an operator watches, as plain data (what RLS lets the caller see).

    The workers and the Postgres health figures cover every organization, so a
    tenant-scoped caller gets ``None`` for them rather than totals across tenants.
    """
    conn = _conn.raw(conn)
    staff = bool(_rows(conn, "metrics_sees_all")[0]["sees_all"])
    return {
        "queue_depth": _rows(conn, "metrics_queue_depth"),
        "job_counts": _rows(conn, "metrics_job_counts"),
        "processing_times": _rows(conn, "metrics_processing_times"),
        "failure_rates": _rows(conn, "metrics_failure_rates"),
        "workers": _rows(conn, "metrics_workers")[0] if staff else None,
        "postgres": _rows(conn, "metrics_postgres_health")[0] if staff else None,
    }


def prometheus_text(data: dict[str, Any]) -> str:
    """The metrics in the Prometheus text exposition format."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    families: list[GaugeMetricFamily] = []

    def gauge(name: str, doc: str, labels: list[str], rows: list[dict[str, Any]], key: str) -> None:
        family = GaugeMetricFamily(f"pgjobs_{name}", doc, labels=labels)
        for row in rows:
            if row.get(key) is not None:
                family.add_metric([str(row.get(label) or "") for label in labels], float(row[key]))
        families.append(family)

    depth = data["queue_depth"]
    for state in ("queued", "scheduled", "running", "retrying", "waiting"):
        gauge(
            f"queue_{state}",
            f"Jobs {state} per queue and priority",
            ["queue", "priority"],
            depth,
            state,
        )
    gauge(
        "queue_oldest_queued_seconds",
        "Age of the oldest due queued job",
        ["queue", "priority"],
        depth,
        "oldest_queued_seconds",
    )
    gauge(
        "jobs",
        "Jobs per organization, type and state",
        ["organization", "job_type", "state"],
        data["job_counts"],
        "jobs",
    )
    times = data["processing_times"]
    for stat in ("avg_ms", "p50_ms", "p95_ms"):
        gauge(
            f"processing_{stat}",
            f"Attempt duration {stat} over the last hour",
            ["job_type"],
            times,
            stat,
        )
    rates = data["failure_rates"]
    gauge("attempts", "Finished attempts over the last 24 hours", ["job_type"], rates, "attempts")
    gauge("failures", "Failed attempts over the last 24 hours", ["job_type"], rates, "failures")
    gauge(
        "failure_rate",
        "Failed / finished attempts over the last 24 hours",
        ["job_type"],
        rates,
        "rate",
    )
    workers = [data["workers"]] if data["workers"] else []
    gauge("workers", "Live worker processes", [], workers, "workers")
    gauge("running_jobs", "Jobs held by live workers", [], workers, "running_jobs")
    pg = [data["postgres"]] if data["postgres"] else []
    for key in (
        "jobs_dead_tuples",
        "jobs_live_tuples",
        "jobs_total_bytes",
        "oldest_transaction_seconds",
        "notify_queue_usage",
    ):
        gauge(f"postgres_{key}", f"PostgreSQL health: {key}", [], pg, key)

    class _Collector:
        def collect(self) -> list[GaugeMetricFamily]:
            return families

    registry = CollectorRegistry()
    registry.register(_Collector())
    return generate_latest(registry).decode()
