"""The pgjobs exception tree, and the one place database errors are translated."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg import errors as pg


class PgJobsError(Exception):
    """Base of every error pgjobs raises on purpose."""


class InvalidJob(PgJobsError, ValueError):
    """Bad input to enqueue or registration; nothing was written."""


class UnknownJobType(InvalidJob):
    """Enqueue of a job type the database has never been told about."""


# What to do about an unknown type: the type reaches the database only when a
# process that imported its @pgjobs.job handler enqueues it, a worker starts
# with it, or `pgjobs register` writes it.
UNKNOWN_TYPE_HINT = (
    "register it first: import the module with its @pgjobs.job handler before "
    "enqueueing (the first enqueue writes the type), run `pgjobs register --import "
    "<module>`, or start a worker with `--import <module>`"
)


class JobNotFound(PgJobsError, LookupError):
    """No such job, or not visible to the current organization."""


class InvalidTransition(PgJobsError):
    """The job is not in a state that allows the operation (e.g. cancel a finished job)."""


class AccessDenied(PgJobsError, PermissionError):
    """Row-level security or privileges refused the operation."""


class WaitTimeout(PgJobsError, TimeoutError):
    """``pgjobs.wait`` gave up: the job had not finished within its timeout."""


class TransientError(PgJobsError):
    """Raised by a handler: the attempt failed; retry policy applies."""


class PermanentError(PgJobsError):
    """Raised by a handler: the job can never succeed; it goes dead at once."""


class JobCanceled(PgJobsError):
    """Raised inside a handler at its next ``ctx`` call once the job is canceled."""


# SQLSTATEs raised by pgjobs' own SQL (0002_core.sql, 0011_client_contract.sql);
# the README's table for other languages lists the same.
_INVALID_JOB = "PJ001"
_NOT_FOUND = "PJ002"
_BAD_STATE = "PJ003"
_NO_ORGANIZATION = "PJ004"


def _message(exc: psycopg.Error) -> str:
    diag = exc.diag.message_primary
    return diag if diag else str(exc)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Turns database errors that carry a pgjobs meaning into pgjobs exceptions."""
    try:
        yield
    except psycopg.Error as exc:
        state = exc.sqlstate or ""
        if state == _INVALID_JOB:
            message = _message(exc)
            if message.startswith("unknown job type"):
                raise UnknownJobType(f"{message}: {UNKNOWN_TYPE_HINT}") from exc
            raise InvalidJob(message) from exc
        if state == _NOT_FOUND:
            raise JobNotFound(_message(exc)) from exc
        if state == _BAD_STATE:
            raise InvalidTransition(_message(exc)) from exc
        if state == _NO_ORGANIZATION or isinstance(exc, pg.InsufficientPrivilege):
            raise AccessDenied(_message(exc)) from exc
        if isinstance(exc, pg.UntranslatableCharacter | pg.CharacterNotInRepertoire):
            raise InvalidJob(_message(exc)) from exc
        if isinstance(exc, pg.DataException | pg.CheckViolation | pg.NotNullViolation):
            raise InvalidJob(_message(exc)) from exc
        raise
