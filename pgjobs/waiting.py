"""``pgjobs.wait``: the job once it has finished (completed, dead or canceled).

A ``pgjobs_state`` notification about the job is only a hint to look again:
the job is always re-read from the table, through the caller's connection and
scope (or, given a DSN, a session of its own scoped to ``organization``). A
lost or missing notification costs at most a poll. What the two faces share
lives here; ``pgjobs.aio.wait`` differs only where it awaits.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import conninfo

from pgjobs import _conn
from pgjobs.errors import InvalidJob, WaitTimeout
from pgjobs.jobs import get_steps
from pgjobs.notify import parse
from pgjobs.payload import check_text
from pgjobs.records import Job
from pgjobs.statements import tenancy
from pgjobs.statements.monitoring import listen_events
from pgjobs.states import TERMINAL
from pgjobs.steps import Steps, drive

APPLICATION_NAME = "pgjobs wait"
_FIRST_POLL = 0.05


class Plan:
    """One wait's arguments, checked, and its clock: how long to sleep next."""

    def __init__(
        self, job_id: int, timeout: float | None, organization: str | None, poll_seconds: float
    ) -> None:
        if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id <= 0:
            raise InvalidJob(f"a job id is a positive integer, got {job_id!r}")
        for name, value in (("timeout", timeout), ("poll_seconds", poll_seconds)):
            if value is not None and (isinstance(value, bool) or not value >= 0):
                raise InvalidJob(f"{name} must be a number of seconds >= 0, got {value!r}")
        check_text("organization", organization)
        self.job_id = job_id
        self.timeout = timeout
        self.organization = organization
        self.poll = poll_seconds
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.next_poll = _FIRST_POLL

    def finished(self, job: Job) -> bool:
        self.last = job
        return job.state in TERMINAL

    def pause(self, listening: bool) -> float:
        """Seconds to wait for a hint before reading again; WaitTimeout past the
        deadline. Without LISTEN the polls back off from 50 ms to ``poll``."""
        if listening:
            step = self.poll
        else:
            step, self.next_poll = self.next_poll, min(self.next_poll * 2, self.poll)
        if self.deadline is None:
            return step
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(
                f"job {self.job_id} has not finished after {self.timeout} s "
                f"(it is {self.last.state})"
            )
        return min(step, left)

    def is_hint(self, channel: str, payload: str) -> bool:
        """Whether a notification names this job (the row is re-read anyway)."""
        event = parse(channel, payload)
        return event is not None and event.get("id") == self.job_id

    def read(self, info: psycopg.ConnectionInfo, scoped: bool) -> Steps[Job]:
        """The job, through the scope ``organization`` names when the session is ours."""
        if scoped and self.organization is not None:
            yield tenancy.tenant_enter.bind(organization=self.organization)
        return (yield from get_steps(info, self.job_id))


def listener_conninfo(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> str:
    """Where the caller's connection goes, to LISTEN beside it: a connection in
    a transaction (or a pooled one) must not LISTEN itself."""
    params: dict[str, Any] = dict(conn.info.get_parameters())
    if conn.info.password:
        params["password"] = conn.info.password
    params["application_name"] = APPLICATION_NAME
    return conninfo.make_conninfo("", **params)


def wait(
    conn_or_dsn: Any,
    job_id: int,
    timeout: float | None = None,
    *,
    organization: str | None = None,
    poll_seconds: float = 1.0,
) -> Job:
    """Waits until job ``job_id`` has finished and returns it (state, result,
    last_error); WaitTimeout (a TimeoutError) after ``timeout`` seconds.

    Given a connection, the job is read through it, under the caller's scope
    and transaction; given a DSN, through a session of its own, scoped to
    ``organization`` when the role needs one. Woken by ``pgjobs_state``,
    polling every ``poll_seconds`` besides (more often while no LISTEN works).
    """
    plan = Plan(job_id, timeout, organization, poll_seconds)
    if isinstance(conn_or_dsn, str):
        with psycopg.connect(
            conn_or_dsn, autocommit=True, application_name=APPLICATION_NAME
        ) as own:
            return _wait(own, own, plan)
    reader = _conn.raw(conn_or_dsn)
    try:
        listener = psycopg.connect(listener_conninfo(reader), autocommit=True)
    except psycopg.Error:
        return _wait(reader, None, plan)  # polling only
    with listener:
        return _wait(reader, listener, plan)


def _wait(
    reader: psycopg.Connection[Any], listener: psycopg.Connection[Any] | None, plan: Plan
) -> Job:
    if listener is not None:
        listen_events(listener)
    own = reader is listener
    while True:
        if own and plan.organization is not None:
            with reader.transaction():
                job = drive(reader, plan.read(reader.info, True))
        else:
            job = drive(reader, plan.read(reader.info, False))
        if plan.finished(job):
            return job
        pause = plan.pause(listener is not None)
        if listener is None:
            time.sleep(pause)
            continue
        notes = listener.notifies(timeout=pause)
        for note in notes:
            if plan.is_hint(note.channel, note.payload):
                break
        notes.close()
