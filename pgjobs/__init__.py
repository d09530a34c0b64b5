"""pgjobs: a background job engine that lives in PostgreSQL.

Importing it loads the application API only: the worker's modules load when a
worker starts, and ``pgjobs.testing`` (which runs jobs as the worker does) on
first use.
"""

from typing import TYPE_CHECKING, Any

from pgjobs.context import AsyncJobContext, JobContext
from pgjobs.enqueue import EnqueueResult, enqueue, enqueue_many
from pgjobs.errors import (
    AccessDenied,
    InvalidJob,
    InvalidTransition,
    JobCanceled,
    JobNotFound,
    PermanentError,
    PgJobsError,
    TransientError,
    WaitTimeout,
)
from pgjobs.jobs import cancel, get, history, list_jobs, retry
from pgjobs.monitoring import metrics
from pgjobs.notify import subscribe
from pgjobs.records import Event, Job
from pgjobs.registry import Registry, job, on_worker_start
from pgjobs.schedules import (
    list_schedules,
    pause_schedule,
    resume_schedule,
    schedule,
    trigger_schedule,
    unschedule,
)
from pgjobs.states import State
from pgjobs.tenancy import tenant
from pgjobs.waiting import wait

if TYPE_CHECKING:
    from pgjobs import aio, testing


def __getattr__(name: str) -> Any:
    if name in ("testing", "aio"):
        import importlib

        return importlib.import_module(f"pgjobs.{name}")
    raise AttributeError(f"module 'pgjobs' has no attribute {name!r}")


__all__ = [
    "AccessDenied",
    "AsyncJobContext",
    "EnqueueResult",
    "Event",
    "InvalidJob",
    "InvalidTransition",
    "Job",
    "JobCanceled",
    "JobContext",
    "JobNotFound",
    "PermanentError",
    "PgJobsError",
    "Registry",
    "State",
    "TransientError",
    "WaitTimeout",
    "aio",
    "cancel",
    "enqueue",
    "enqueue_many",
    "get",
    "history",
    "job",
    "list_jobs",
    "list_schedules",
    "metrics",
    "on_worker_start",
    "pause_schedule",
    "resume_schedule",
    "retry",
    "schedule",
    "subscribe",
    "tenant",
    "testing",
    "trigger_schedule",
    "unschedule",
    "wait",
]
