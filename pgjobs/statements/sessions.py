"""Session setup (``sql/queries/sessions.sql``): how every worker connection is
configured, a job's own transaction begins, and wake-ups are listened for."""

from __future__ import annotations

from pgjobs.statements.base import Params, nothing, statement


@statement("session_configure", nothing, fetch=False)
def session_configure(
    *,
    statement_timeout_ms: int,
    application_name: str,
    synchronous_commit: str | None = None,
    jit: str | None = None,
) -> Params:
    """Bounds statements and idle transactions; None leaves a setting as the server says."""
    timeout = str(statement_timeout_ms)
    return {
        "statement_timeout": timeout,
        "idle_timeout": timeout,
        "application_name": application_name,
        "synchronous_commit": synchronous_commit,
        "jit": jit,
    }


@statement("job_transaction_begin", nothing, fetch=False)
def job_transaction_begin(*, organization: str | None, statement_timeout_ms: int) -> Params:
    """Scopes the transaction to the job's organization, bounded by its timeout."""
    return {"organization": organization or "", "statement_timeout": str(statement_timeout_ms)}


def _none() -> None:
    return None


wakeup_listen = statement("wakeup_listen", nothing, fetch=False)(_none)
wakeup_unlisten = statement("wakeup_unlisten", nothing, fetch=False)(_none)
cancel_listen = statement("cancel_listen", nothing, fetch=False)(_none)
