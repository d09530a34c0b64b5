"""Which database errors a worker waits out, and which stop it.

Every loop of the worker (the supervisor's tick, a worker process's claim
loop, the lease beacon, the sessions they open) hands an error it did not
expect to :func:`classify` and to a :class:`Retry`, and does what they say:

- **retry with backoff**: the server is away or refuses writes for a while.
  Connection loss, an administrator's or a crash's shutdown (57P01-57P03),
  a read-only database (25006: a demoted primary, ``default_transaction_read_only``),
  resources running out (class 53: disk full, out of memory, too many
  connections), lock and serialization conflicts, a statement timeout, and
  I/O errors. The session is dropped and made again after the wait: a fresh
  one is what reaches a promoted primary, and a read-only setting applies to
  new sessions only.
- **retry, briefly**: a pgjobs table, function or schema that does not exist
  (42P01, 42703, 42883, 3F000). A migration running meanwhile explains it for a few
  seconds; past :data:`MISSING_OBJECTS_SECONDS` it is an unmigrated database.
- **stop with a clear message**: everything else (permissions, a query pgjobs
  sent that the server refuses, data errors): retrying would fail the same way.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import psycopg

MISSING_OBJECTS_SECONDS = 60.0

# SQLSTATEs and classes (first two characters) that clear on their own.
_TRANSIENT_CLASSES = ("08", "53", "58")  # connection, resources, system (I/O)
_TRANSIENT_STATES = frozenset(
    {
        "25006",  # read_only_sql_transaction
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up, recovering)
        "57014",  # query_canceled (statement_timeout on a stuck lock)
        "55P03",  # lock_not_available
        "55006",  # object_in_use
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "25P03",  # idle_in_transaction_session_timeout
    }
)
_MISSING_STATES = frozenset({"42P01", "42703", "42883", "3F000"})


FIRST_SECONDS = 0.1
CAP_SECONDS = 5.0


class Backoff:
    def __init__(self, first: float = FIRST_SECONDS, cap: float = CAP_SECONDS) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    def next(self) -> float:
        """The delay to wait now; the one after is twice as long, up to the cap."""
        delay = self.delay
        self.delay = min(self.delay * 2, self.cap)
        return delay


class Kind(enum.Enum):
    RETRY = "retry"  # wait with backoff, then a fresh session
    MISSING = "missing"  # retry while a migration may explain it
    STOP = "stop"  # end the worker with the message


class Fault(NamedTuple):
    kind: Kind
    sqlstate: str | None
    message: str

    @property
    def retry(self) -> bool:
        return self.kind is not Kind.STOP


def classify(exc: BaseException) -> Fault:
    """How a worker treats ``exc`` (see the module docstring)."""
    message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if not isinstance(exc, psycopg.Error):
        return Fault(Kind.STOP, None, message)
    state = exc.sqlstate
    if state is None:
        # No SQLSTATE: the connection failed or broke (libpq's own errors), or
        # psycopg refused a call on a closed connection.
        kind = Kind.RETRY if isinstance(exc, psycopg.OperationalError) else Kind.STOP
        return Fault(kind, None, message)
    if state in _TRANSIENT_STATES or state[:2] in _TRANSIENT_CLASSES:
        return Fault(Kind.RETRY, state, message)
    if state in _MISSING_STATES:
        return Fault(Kind.MISSING, state, message)
    return Fault(Kind.STOP, state, message)


def explain(fault: Fault) -> str:
    """The operator's one line for a fault that stops the worker."""
    if fault.kind is Kind.MISSING:
        return (
            f"{fault.message}: the pgjobs schema is missing or older than this worker; "
            "run `pgjobs migrate`"
        )
    if fault.sqlstate == "42501":
        return f"{fault.message}: the worker's role lacks a privilege (grant it pgjobs_worker)"
    where = f" (SQLSTATE {fault.sqlstate})" if fault.sqlstate else ""
    return f"{fault.message}{where}: not a fault that clears by waiting"


T = TypeVar("T")

# Tries in a row of one autocommit statement that a row moving to another
# partition of pgjobs.jobs may fail (migration 0060).
MOVED_TRIES = 3


def retry_moved(statement: Callable[[], T], tries: int = MOVED_TRIES) -> T:
    """``statement()``, tried again at once when a row it would lock was moved
    to another partition of pgjobs.jobs by a transaction that committed while
    it waited (40001, SKIP LOCKED or not): a job it names was completed,
    canceled or rescued meanwhile, and a fresh try sees where it went. Past
    ``tries`` the error is a fault like any other. Autocommit statements only:
    in a transaction the error has ended it."""
    for _ in range(tries - 1):
        try:
            return statement()
        except psycopg.errors.SerializationFailure:
            pass
    return statement()


class Fatal(Exception):
    """A database error a worker must not wait out; its message says why."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(explain(fault))
        self.fault = fault


class Retry:
    """One loop's memory of a fault: the backoff between attempts, reset only by
    work that succeeded (a session that connects and then fails at once must not
    reconnect at full speed), and how long objects have been missing."""

    def __init__(
        self,
        missing_seconds: float = MISSING_OBJECTS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backoff = Backoff()
        self.missing_seconds = missing_seconds
        self.clock = clock
        self.missing_since: float | None = None
        self.failing = False

    def ok(self) -> None:
        """The loop did real work: the next fault starts its backoff afresh."""
        if self.failing or self.missing_since is not None:
            self.backoff.reset()
            self.failing = False
            self.missing_since = None

    def delay(self, exc: BaseException) -> tuple[Fault, float]:
        """The fault and how long to wait before trying again; raises
        :class:`Fatal` (from ``exc``) when it is not one to wait out."""
        fault = classify(exc)
        if fault.kind is Kind.MISSING:
            now = self.clock()
            if self.missing_since is None:
                self.missing_since = now
            elif now - self.missing_since > self.missing_seconds:
                raise Fatal(fault) from exc
        elif fault.kind is Kind.STOP:
            raise Fatal(fault) from exc
        self.failing = True
        return fault, self.backoff.next()
