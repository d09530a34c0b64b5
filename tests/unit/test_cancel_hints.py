"""Cancel hints (pgjobs/worker/timeouts.py): what a pgjobs_cancel payload may
name, and how many wait at most. No database: the parsing and the bound."""

from __future__ import annotations

import pytest

from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.slots import Slots
from pgjobs.worker.timeouts import MAX_HINTS, Enforcer, hinted_job


@pytest.mark.parametrize(
    ("payload", "job_id"),
    [("42", 42), ("9223372036854775807", 2**63 - 1), ("007", 7)],
)
def test_a_plain_positive_id_is_a_hint(payload: str, job_id: int) -> None:
    assert hinted_job(payload) == job_id


@pytest.mark.parametrize(
    "payload",
    ["", "0", "-1", " 1", "1 ", "+1", "1.0", "1e3", "\u0661", "²", "9223372036854775808",
     "9" * 5000, '{"id": 1}', "x" * 7990],
)  # fmt: skip
def test_anything_else_is_no_hint(payload: str) -> None:
    assert hinted_job(payload) is None


def test_hints_are_bounded_and_the_oldest_goes_first() -> None:
    enforcer = Enforcer(WorkerConfig(dsn="", processes=1), Slots(1), log=None)
    for job_id in range(1, MAX_HINTS * 3):
        enforcer._hint(job_id)
    assert len(enforcer.hints) == MAX_HINTS
    assert min(enforcer.hints) == MAX_HINTS * 2
    enforcer._hint(MAX_HINTS * 2)  # hinted again: now the newest
    enforcer._hint(10**9)
    assert MAX_HINTS * 2 in enforcer.hints and MAX_HINTS * 2 + 1 not in enforcer.hints
