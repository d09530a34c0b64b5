"""Reconnecting with backoff: the one helper behind every session pgjobs keeps
open (worker, beacon, supervisor, subscribe). A fault that clears (see
:mod:`pgjobs.faults`) is retried after 0.1 s, then twice as long each time up
to a cap; work that succeeds starts the next fault's backoff afresh. Any other
error stops the retrying as :class:`pgjobs.faults.Fatal`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from pgjobs.faults import CAP_SECONDS, FIRST_SECONDS, Backoff, Retry

__all__ = ["CAP_SECONDS", "FIRST_SECONDS", "Backoff", "with_backoff"]

T = TypeVar("T")


def with_backoff(
    attempt: Callable[[Retry], T],
    *,
    log: Any,
    event: str,
    stop: Callable[[], bool] = lambda: False,
    wait: Callable[[float], object] = time.sleep,
    retry: Retry | None = None,
    **keys: Any,
) -> T:
    """Calls ``attempt`` until it returns. After each fault that clears it logs
    ``event`` (with ``error``, ``sqlstate`` and ``retry_in``) and waits, unless
    ``stop()`` says to give up: then the error propagates. Other errors raise
    :class:`~pgjobs.faults.Fatal`. ``attempt`` gets the :class:`Retry` to call
    ``ok()`` on once its work succeeds, when it goes on serving."""
    retry = retry or Retry()
    while True:
        try:
            return attempt(retry)
        except psycopg.Error as exc:
            fault, delay = retry.delay(exc)  # raises Fatal for the rest
            if stop():
                raise
            log.warning(event, error=fault.message, sqlstate=fault.sqlstate, retry_in=delay, **keys)
            wait(delay)
