"""What a running handler writes through its context (``sql/queries/progress.sql``),
fenced by its lease. Each says whether a cancel is pending; None when the
lease is gone (rescued, canceled, finished elsewhere)."""

from __future__ import annotations

from typing import Any

from pgjobs.statements.base import Params, statement


def _cancel_requested(found: list[Any]) -> bool | None:
    return bool(found[0][0]) if found else None


@statement("job_progress", _cancel_requested)
def progress(*, job_id: int, lease_token: int, percent: float, message: str | None) -> Params:
    """Persists progress and NOTIFYs ``pgjobs_progress``."""
    return {"id": job_id, "lease_token": lease_token, "progress": percent, "message": message}


@statement("job_checkpoint", _cancel_requested)
def checkpoint(*, job_id: int, lease_token: int, state: str) -> Params:
    """Persists a checkpoint (JSON text) a retried attempt reads back."""
    return {"id": job_id, "lease_token": lease_token, "checkpoint": state}


@statement("job_cancel_requested", _cancel_requested)
def cancel_requested(*, job_id: int, lease_token: int) -> Params:
    return {"id": job_id, "lease_token": lease_token}
