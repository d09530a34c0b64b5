"""A job type with a per-second system schedule, for the real-worker test only.

Imported by that test's worker process (``--import tests.support.schedule_handlers``),
never by the test process: a decorated schedule registered there would be
written by every other test's registry.sync.
"""

from __future__ import annotations

from typing import Any

import pgjobs


@pgjobs.job("t.every_second", schedule="* * * * * *", queue="ticks")
def every_second(ctx: pgjobs.JobContext, **payload: Any) -> None:
    return None
