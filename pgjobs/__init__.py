"""pgjobs: a background job engine that lives in PostgreSQL."""

from pgjobs import testing
from pgjobs.context import JobContext
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
)
from pgjobs.jobs import cancel, get, history, list_jobs, retry
from pgjobs.monitoring import metrics
from pgjobs.notify import subscribe
from pgjobs.registry import job
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

__all__ = [
    "AccessDenied",
    "EnqueueResult",
    "InvalidJob",
    "InvalidTransition",
    "JobCanceled",
    "JobContext",
    "JobNotFound",
    "PermanentError",
    "PgJobsError",
    "State",
    "TransientError",
    "cancel",
    "enqueue",
    "enqueue_many",
    "get",
    "history",
    "job",
    "list_jobs",
    "list_schedules",
    "metrics",
    "pause_schedule",
    "resume_schedule",
    "retry",
    "schedule",
    "subscribe",
    "tenant",
    "testing",
    "trigger_schedule",
    "unschedule",
]
