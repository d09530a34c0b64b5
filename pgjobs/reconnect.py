"""Reconnecting with backoff: the one helper behind every session pgjobs keeps
open (worker, beacon, supervisor, subscribe). A lost connection is retried
after 0.1 s, then twice as long each time up to a cap, and a success starts
the next loss's backoff afresh."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

T = TypeVar("T")

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


def with_backoff(
    attempt: Callable[[Backoff], T],
    *,
    log: Any,
    event: str,
    stop: Callable[[], bool] = lambda: False,
    wait: Callable[[float], object] = time.sleep,
    errors: tuple[type[BaseException], ...] = (psycopg.OperationalError,),
    **keys: Any,
) -> T:
    """Calls ``attempt`` until it returns. After each of ``errors`` it logs
    ``event`` (with ``error`` and ``retry_in``) and waits, unless ``stop()``
    says to give up: then the error propagates. ``attempt`` gets the backoff to
    reset once its connection is up, when it goes on serving on it."""
    backoff = Backoff()
    while True:
        try:
            return attempt(backoff)
        except errors as exc:
            if stop():
                raise
            log.warning(event, error=str(exc), retry_in=backoff.delay, **keys)
            wait(backoff.next())
