"""What a handler sees of its job: its data, progress, checkpoints, cancellation,
and a database connection scoped to the job's organization."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from pgjobs.errors import InvalidJob, JobCanceled
from pgjobs.payload import encode
from pgjobs.statements import progress as statements
from pgjobs.statements.claim import ClaimedJob

__all__ = ["ClaimedJob", "JobContext"]

_POLL_SECONDS = 0.5


class JobContext:
    """Passed as the first argument to every handler."""

    def __init__(
        self,
        job: ClaimedJob,
        control: psycopg.Connection[Any],
        open_transaction: Callable[[], psycopg.Connection[Any]],
        cancel_seen: Callable[[], bool],
        worker: str = "",
    ) -> None:
        self.job = job
        self._control = control
        self._open_transaction = open_transaction
        self._cancel_seen = cancel_seen
        self._conn: psycopg.Connection[Any] | None = None
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
        """What the previous attempt saved with :meth:`checkpoint` (None at first)."""
        return self.job.checkpoint

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
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise InvalidJob("progress must be a number from 0 to 100")
        if not math.isfinite(percent) or not 0 <= percent <= 100:
            raise InvalidJob(f"progress must be from 0 to 100, got {percent}")
        self._after_write(
            statements.progress(
                self._control,
                job_id=self.job.id,
                lease_token=self.job.lease_token,
                percent=percent,
                message=message,
            )
        )

    def checkpoint(self, state: Any) -> None:
        """Persists ``state`` (JSON); a retried attempt reads it as ``last_checkpoint``."""
        self._after_write(
            statements.checkpoint(
                self._control,
                job_id=self.job.id,
                lease_token=self.job.lease_token,
                state=encode(state, what="checkpoint"),
            )
        )

    def raise_if_canceled(self) -> None:
        """Raises JobCanceled once a cancel of this job has been requested.

        The worker learns of a cancel by NOTIFY; the row itself is read at most
        twice a second, which also covers a worker that cannot LISTEN.
        """
        if self._cancel_seen():
            raise JobCanceled(f"job {self.job.id} was canceled")
        now = time.monotonic()
        if now - self._last_poll < _POLL_SECONDS:
            return
        self._last_poll = now
        if (
            statements.cancel_requested(
                self._control, job_id=self.job.id, lease_token=self.job.lease_token
            )
            is not False
        ):
            raise JobCanceled(f"job {self.job.id} was canceled")

    def _after_write(self, cancel_requested: bool | None) -> None:
        # None: our lease is gone (rescued, canceled, finished elsewhere).
        if cancel_requested is not False or self._cancel_seen():
            raise JobCanceled(f"job {self.job.id} was canceled or its lease was lost")
