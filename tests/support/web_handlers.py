"""Job types for the dashboard tests (workers import this module).

``web.steps`` moves its progress only as far as the test opens a gate (the
``web_gate`` table), so a test can look at the page at 40% and then let the
job finish: nothing depends on timing.
"""

from __future__ import annotations

import time
from typing import Any

import pgjobs

QUEUE = "web"
GATE_TABLE = "create table web_gate (value int not null); insert into web_gate values (0)"


@pgjobs.job("web.steps", queue=QUEUE, max_attempts=1, timeout=120)
def steps(ctx: pgjobs.JobContext, **payload: Any) -> dict[str, int]:
    done = 0
    while done < 100:
        row = ctx.conn.execute("select value from web_gate").fetchone()
        target = int(row[0]) if row else 0
        if target > done:
            done = min(target, 100)
            ctx.progress(done, f"step {done}")
        else:
            time.sleep(0.02)
    return {"done": done}


@pgjobs.job("web.fails", queue=QUEUE, max_attempts=1)
def fails(ctx: pgjobs.JobContext, **payload: Any) -> None:
    raise pgjobs.PermanentError("this job always fails")


@pgjobs.job("web.owned", queue=QUEUE, cancel_policy="creator")
def owned(ctx: pgjobs.JobContext, **payload: Any) -> None:
    return None
