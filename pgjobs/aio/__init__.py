"""pgjobs for asyncio: the application API, awaitable.

Same names, arguments, results and errors as the blocking API, on a psycopg
``AsyncConnection`` (from an ``AsyncConnectionPool`` too) or SQLAlchemy's
``AsyncConnection``/``AsyncSession``; never a transaction of its own::

    async with aconn.transaction():
        r = await pgjobs.aio.enqueue(aconn, "send_report", {"month": "2026-10"},
                                     organization="acme")
    job = await pgjobs.aio.wait(aconn, r.id, timeout=30)

Each call is the blocking call's own steps (``pgjobs.steps``) run by the
asyncio driver: the checks, statements and results are the same code.
"""

from pgjobs.aio.events import subscribe, wait
from pgjobs.aio.tenancy import tenant
from pgjobs.enqueue import enqueue_many_steps, enqueue_steps
from pgjobs.jobs import cancel_steps, get_steps, history_steps, list_jobs_steps, retry_steps
from pgjobs.monitoring import metrics_steps
from pgjobs.steps import awaitable

enqueue = awaitable(enqueue_steps)
enqueue_many = awaitable(enqueue_many_steps)
get = awaitable(get_steps)
cancel = awaitable(cancel_steps)
retry = awaitable(retry_steps)
list_jobs = awaitable(list_jobs_steps)
history = awaitable(history_steps)
metrics = awaitable(metrics_steps)

__all__ = [
    "cancel",
    "enqueue",
    "enqueue_many",
    "get",
    "history",
    "list_jobs",
    "metrics",
    "retry",
    "subscribe",
    "tenant",
    "wait",
]
