"""The seven job states, mirrored from the CHECK constraint in 0002_core.sql."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    WAITING = "waiting"
    """Some dependency has not completed. In: enqueue with ``depends_on``.
    Out: to queued when the last parent completes, to canceled if one fails."""

    QUEUED = "queued"
    """Runnable once ``run_at`` has passed. In: enqueue, a completed parent,
    ``retry``, a graceful shutdown. Out: claimed by a worker, or canceled."""

    RUNNING = "running"
    """Held by a worker under a lease. Out: completed, retrying, dead, canceled,
    or back to queued when the worker stops before starting it."""

    RETRYING = "retrying"
    """An attempt failed transiently; runs again at ``run_at``. In: the worker
    or the lease rescuer. Out: claimed again, or canceled."""

    COMPLETED = "completed"
    """Terminal: the handler returned."""

    DEAD = "dead"
    """Terminal, the dead-letter queue: attempts spent or a permanent error.
    Out: ``retry`` only."""

    CANCELED = "canceled"
    """Terminal: canceled by a user or by a failed dependency. Out: ``retry`` only."""


TERMINAL = frozenset({State.COMPLETED, State.DEAD, State.CANCELED})
ACTIVE = frozenset(State) - TERMINAL

TRANSITIONS = frozenset(
    {
        (State.WAITING, State.QUEUED),
        (State.WAITING, State.CANCELED),
        (State.QUEUED, State.RUNNING),
        (State.QUEUED, State.CANCELED),
        (State.RETRYING, State.RUNNING),
        (State.RETRYING, State.CANCELED),
        (State.RUNNING, State.COMPLETED),
        (State.RUNNING, State.RETRYING),
        (State.RUNNING, State.DEAD),
        (State.RUNNING, State.CANCELED),
        (State.RUNNING, State.QUEUED),
        (State.DEAD, State.QUEUED),
        (State.CANCELED, State.QUEUED),
    }
)
"""Allowed (from, to) pairs; pgjobs.transition_allowed() is the authority."""
