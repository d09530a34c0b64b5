"""The one classification of database errors every worker loop uses."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from pgjobs.faults import Fatal, Kind, Retry, classify


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("server closed the connection unexpectedly"),
        errors.ReadOnlySqlTransaction("cannot execute UPDATE in a read-only transaction"),
        errors.DiskFull("could not extend file"),
        errors.OutOfMemory("out of memory"),
        errors.TooManyConnections("sorry, too many clients already"),
        errors.AdminShutdown("terminating connection due to administrator command"),
        errors.CrashShutdown("terminating connection because of crash of another server process"),
        errors.CannotConnectNow("the database system is starting up"),
        errors.QueryCanceled("canceling statement due to statement timeout"),
        errors.SerializationFailure("could not serialize access"),
        errors.DeadlockDetected("deadlock detected"),
        errors.IoError("could not read block"),
    ],
)
def test_faults_that_clear_are_retried(error: psycopg.Error) -> None:
    assert classify(error).kind is Kind.RETRY


@pytest.mark.parametrize(
    "error",
    [
        errors.InsufficientPrivilege("permission denied for table jobs"),
        errors.SyntaxError("syntax error at or near"),
        errors.InvalidTextRepresentation("invalid input syntax for type bigint"),
        psycopg.ProgrammingError("incomplete placeholder"),
    ],
)
def test_errors_that_waiting_does_not_clear_stop(error: psycopg.Error) -> None:
    assert classify(error).kind is Kind.STOP
    with pytest.raises(Fatal):
        Retry().delay(error)


def test_missing_objects_are_retried_briefly_then_stop_with_the_migrate_hint() -> None:
    now = [0.0]
    retry = Retry(missing_seconds=30, clock=lambda: now[0])
    missing = errors.UndefinedTable('relation "pgjobs.jobs" does not exist')
    assert classify(missing).kind is Kind.MISSING
    retry.delay(missing)
    now[0] = 29.0
    retry.delay(missing)
    now[0] = 31.0
    with pytest.raises(Fatal, match="pgjobs migrate"):
        retry.delay(missing)


def test_the_backoff_grows_until_work_succeeds() -> None:
    retry = Retry()
    fault = errors.DiskFull("no space left on device")
    delays = [retry.delay(fault)[1] for _ in range(8)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    retry.ok()
    assert retry.delay(fault)[1] == 0.1
