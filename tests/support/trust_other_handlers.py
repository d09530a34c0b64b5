"""A worker of the ``wt`` queue that registers another type than the healthy
worker's (tests/test_worker_trust.py): it must leave the healthy one's jobs alone."""

from __future__ import annotations

from typing import Any

import pgjobs

MODULE = "tests.support.trust_other_handlers"


@pgjobs.job("wt.other", queue="wt")
def other(ctx: pgjobs.JobContext, **payload: Any) -> None:
    return None
