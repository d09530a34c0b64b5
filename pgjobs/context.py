"""What a handler sees of its job: its data, progress, checkpoints, cancellation,
and a database connection scoped to the job's organization."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import structlog

from pgjobs.errors import InvalidJob, JobCanceled
from pgjobs.payload import encode
from pgjobs.statements import Bound, run
from pgjobs.statements import progress as statements
from pgjobs.statements.claim import ClaimedJob

__all__ = ["AsyncJobContext", "ClaimedJob", "JobContext"]

_POLL_SECONDS = 0.5


class _Job:
    """What both kinds of context share: the job's data and how its writes are
    built and read; only where they run differs."""

    def __init__(self, job: ClaimedJob, cancel_seen: Callable[[], bool], worker: str) -> None:
        self.job = job
        self._cancel_seen = cancel_seen
        self._last_poll = 0.0
        self._worker = worker

    @functools.cached_property
    def log(self) -> Any:
        """A structlog logger bound to the job's keys (made on first use)."""
        job = self.job
        return structlog.get_logger("pgjobs.job").bind(
            job_id=job.id,
            job_type=job.job_type,
            organization=job.organization,
            attempt=job.attempt,
            worker=self._worker,
        )

    @property
    def id(self) -> int:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def organization(self) -> str | None:
        return self.job.organization

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    @property
    def last_checkpoint(self) -> Any:
        """What the previous attempt saved with ``checkpoint`` (None at first)."""
        return self.job.checkpoint

    def _progress(self, percent: float, message: str | None) -> Bound[bool | None]:
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise InvalidJob("progress must be a number from 0 to 100")
        if not math.isfinite(percent) or not 0 <= percent <= 100:
            raise InvalidJob(f"progress must be from 0 to 100, got {percent}")
        job = self.job
        return statements.progress.bind(
            job_id=job.id, lease_token=job.lease_token, percent=percent, message=message
        )

    def _checkpoint(self, state: Any) -> Bound[bool | None]:
        job = self.job
        return statements.checkpoint.bind(
            job_id=job.id, lease_token=job.lease_token, state=encode(state, what="checkpoint")
        )

    def _cancel_poll(self) -> Bound[bool | None] | None:
        """The row read that ``raise_if_canceled`` owes now, if any (the worker
        learns of a cancel by NOTIFY; the row is read at most twice a second,
        which also covers a worker that cannot LISTEN)."""
        if self._cancel_seen():
            raise JobCanceled(f"job {self.job.id} was canceled")
        now = time.monotonic()
        if now - self._last_poll < _POLL_SECONDS:
            return None
        self._last_poll = now
        job = self.job
        return statements.cancel_requested.bind(job_id=job.id, lease_token=job.lease_token)

    def _after_write(self, cancel_requested: bool | None) -> None:
        # None: our lease is gone (rescued, canceled, finished elsewhere).
        if cancel_requested is not False or self._cancel_seen():
            raise JobCanceled(f"job {self.job.id} was canceled or its lease was lost")

    def _after_poll(self, cancel_requested: bool | None) -> None:
        if cancel_requested is not False:
            raise JobCanceled(f"job {self.job.id} was canceled")


class JobContext(_Job):
    """Passed as the first argument to every (sync) handler."""

    def __init__(
        self,
        job: ClaimedJob,
        control: psycopg.Connection[Any],
        open_transaction: Callable[[], psycopg.Connection[Any]],
        cancel_seen: Callable[[], bool],
        worker: str = "",
    ) -> None:
        super().__init__(job, cancel_seen, worker)
        self._control = control
        self._open_transaction = open_transaction
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """A connection inside this job's own transaction, scoped to its organization.

        The job's completion is written in the same transaction, so the
        handler's writes and the job's completion commit (or roll back) together.
        """
        if self._conn is None:
            self.raise_if_canceled()
            self._conn = self._open_transaction()
        return self._conn

    @property
    def transaction_open(self) -> bool:
        return self._conn is not None

    def progress(self, percent: float, message: str | None = None) -> None:
        """Persists progress (0-100) and NOTIFYs ``pgjobs_progress``."""
        self._after_write(run(self._control, self._progress(percent, message)))

    def checkpoint(self, state: Any) -> None:
        """Persists ``state`` (JSON); a retried attempt reads it as ``last_checkpoint``."""
        self._after_write(run(self._control, self._checkpoint(state)))

    def raise_if_canceled(self) -> None:
        """Raises JobCanceled once a cancel of this job has been requested."""
        poll = self._cancel_poll()
        if poll is not None:
            self._after_poll(run(self._control, poll))


class AsyncJobContext(_Job):
    """Passed to ``async def`` handlers: :class:`JobContext` with awaitable
    ``progress``, ``checkpoint`` and ``raise_if_canceled`` (same checks, same
    statements, run on the worker's event loop). A cancel or a timeout also
    cancels the handler's task, so any ``await`` stops it."""

    def __init__(
        self,
        job: ClaimedJob,
        arun: Callable[[Bound[Any]], Awaitable[Any]],
        cancel_seen: Callable[[], bool],
        worker: str = "",
    ) -> None:
        super().__init__(job, cancel_seen, worker)
        self._arun = arun

    transaction_open = False

    @property
    def conn(self) -> Any:
        raise TypeError(
            "ctx.conn is the job's transaction for sync handlers; an async handler "
            "writes through its own async connection (a pool made in "
            "@pgjobs.on_worker_start, say)"
        )

    async def progress(self, percent: float, message: str | None = None) -> None:
        """Persists progress (0-100) and NOTIFYs ``pgjobs_progress``."""
        self._after_write(await self._arun(self._progress(percent, message)))

    async def checkpoint(self, state: Any) -> None:
        """Persists ``state`` (JSON); a retried attempt reads it as ``last_checkpoint``."""
        self._after_write(await self._arun(self._checkpoint(state)))

    async def raise_if_canceled(self) -> None:
        """Raises JobCanceled once a cancel of this job has been requested."""
        poll = self._cancel_poll()
        if poll is not None:
            self._after_poll(await self._arun(poll))
