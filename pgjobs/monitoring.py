"""Queue metrics from the views, for ``pgjobs metrics`` and Prometheus."""

from __future__ import annotations

from typing import Any

from psycopg import ConnectionInfo

from pgjobs.statements import monitoring as statements
from pgjobs.steps import Steps, blocking


def metrics_steps(info: ConnectionInfo) -> Steps[dict[str, Any]]:
    """Everything an operator watches, as plain data (what RLS lets the caller see).

    The workers and the Postgres health figures cover every organization, so a
    tenant-scoped caller gets ``None`` for them rather than totals across tenants.
    """
    staff = bool((yield statements.sees_all.bind())[0]["sees_all"])
    return {
        "queue_depth": (yield statements.queue_depth.bind()),
        "job_counts": (yield statements.job_counts.bind()),
        "processing_times": (yield statements.processing_times.bind()),
        "failure_rates": (yield statements.failure_rates.bind()),
        "workers": (yield statements.workers.bind())[0] if staff else None,
        # Job types no live worker has a handler for: their jobs wait.
        "unserved_job_types": (yield statements.unserved_job_types.bind()) if staff else None,
        "postgres": (yield statements.postgres_health.bind())[0] if staff else None,
    }


metrics = blocking(metrics_steps)


def prometheus_text(data: dict[str, Any]) -> str:
    """The metrics in the Prometheus text exposition format."""
    from prometheus_client import CollectorRegistry, generate_latest

    families = _families(data)

    class _Collector:
        def collect(self) -> list[Any]:
            return families

    registry = CollectorRegistry()
    registry.register(_Collector())
    return generate_latest(registry).decode()


_HEALTH = (
    "jobs_dead_tuples",
    "jobs_live_tuples",
    "jobs_total_bytes",
    "oldest_transaction_seconds",
    "notify_queue_usage",
)


def _gauge(name: str, doc: str, labels: list[str], rows: list[dict[str, Any]], key: str) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily(f"pgjobs_{name}", doc, labels=labels)
    for row in rows:
        if row.get(key) is not None:
            family.add_metric([str(row.get(label) or "") for label in labels], float(row[key]))
    return family


def _families(data: dict[str, Any]) -> list[Any]:
    """One gauge family per figure of :func:`metrics`."""
    depth, times, rates = data["queue_depth"], data["processing_times"], data["failure_rates"]
    by_queue = ["queue", "priority"]
    families = [
        _gauge(f"queue_{state}", f"Jobs {state} per queue and priority", by_queue, depth, state)
        for state in ("queued", "scheduled", "running", "retrying", "waiting")
    ]
    families += [
        _gauge("queue_oldest_queued_seconds", "Age of the oldest due queued job", by_queue,
               depth, "oldest_queued_seconds"),
        _gauge("jobs", "Jobs per organization, type and state",
               ["organization", "job_type", "state"], data["job_counts"], "jobs"),
    ]  # fmt: skip
    families += [
        _gauge(f"processing_{stat}", f"Attempt duration {stat} over the last hour",
               ["job_type"], times, stat)
        for stat in ("avg_ms", "p50_ms", "p95_ms")
    ]  # fmt: skip
    families += [
        _gauge("attempts", "Finished attempts over the last 24 hours", ["job_type"], rates,
               "attempts"),
        _gauge("failures", "Failed attempts over the last 24 hours", ["job_type"], rates,
               "failures"),
        _gauge("failure_rate", "Failed / finished attempts over the last 24 hours",
               ["job_type"], rates, "rate"),
    ]  # fmt: skip
    workers = [data["workers"]] if data["workers"] else []
    families.append(_gauge("workers", "Live worker processes", [], workers, "workers"))
    families.append(
        _gauge("running_jobs", "Jobs held by live workers", [], workers, "running_jobs")
    )
    families.append(
        _gauge("unserved_runnable_jobs",
               "Runnable jobs of a type no live worker has a handler for", ["job_type"],
               data["unserved_job_types"] or [], "runnable_jobs")
    )  # fmt: skip
    pg = [data["postgres"]] if data["postgres"] else []
    families += [_gauge(f"postgres_{k}", f"PostgreSQL health: {k}", [], pg, k) for k in _HEALTH]
    return families
