"""Pure logic, without a database: the slot protocol between the supervisor and
its processes, payload encoding, batch sizing, durations, backoff and the
statement layer's parameter building."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid

import pytest

from pgjobs.commands import parse_duration
from pgjobs.errors import InvalidJob
from pgjobs.payload import MAX_DEPTH, encode
from pgjobs.reconnect import Backoff
from pgjobs.statements import ClaimedJob, Completed, Failed, Lease
from pgjobs.statements.outcomes import complete_many, fail_many
from pgjobs.worker import slots as slot_fields
from pgjobs.worker.executor import BatchSize
from pgjobs.worker.slots import Running, Slots, now_ms

# -- the slot protocol --------------------------------------------------------


def test_a_slot_shows_the_running_job_with_its_lease_and_deadline() -> None:
    slots = Slots(2)
    before = now_ms()
    slots.start(1, job_id=42, lease_token=7, timeout_seconds=3)
    running = slots.running(1)
    assert running is not None and (running.job_id, running.lease_token) == (42, 7)
    assert before + 3000 <= running.deadline_ms <= now_ms() + 3000
    assert slots.running(0) is None


def test_a_job_without_timeout_has_no_deadline_and_a_finished_one_leaves_the_slot() -> None:
    slots = Slots(1)
    slots.start(0, job_id=5, lease_token=1, timeout_seconds=0)
    assert slots.running(0) == Running(5, 1, 0)
    slots.finish(0)
    assert slots.running(0) is None


def test_a_cancel_request_concerns_only_the_job_it_names() -> None:
    slots = Slots(1)
    slots.start(0, job_id=5, lease_token=1, timeout_seconds=0)
    slots.request_cancel(0, 5, grace_seconds=0.5)
    assert slots.cancel_requested(0, 5)
    assert not slots.cancel_requested(0, 6)
    assert not slots.cancel_requested(0, 0)  # no job: never "canceled"
    assert slots.cancel_deadline_ms(0) >= now_ms()


def test_backend_pids_skip_unset_sessions_and_reset_clears_everything() -> None:
    slots = Slots(1)
    slots.put(0, slot_fields.PID_CONTROL, 100)
    slots.put(0, slot_fields.PID_BEACON, 300)
    assert slots.backend_pids(0) == [100, 300]
    slots.reset(0)
    assert slots.backend_pids(0) == [] and slots.running(0) is None


def test_a_slot_read_while_a_new_job_is_written_is_never_a_mix() -> None:
    """The worker clears JOB first and sets it last: a reader that sees JOB 0 in
    the middle of a start sees nothing, not the old job with the new token."""
    slots = Slots(1)
    slots.start(0, job_id=1, lease_token=10, timeout_seconds=0)
    base = slots._base(0)
    slots.array[base + slot_fields.JOB] = 0  # what start() does first
    slots.array[base + slot_fields.TOKEN] = 20
    assert slots.running(0) is None
    slots.array[base + slot_fields.JOB] = 2
    assert slots.running(0) == Running(2, 20, 0)


def test_a_slot_holds_one_entry_per_concurrent_job_and_cancels_find_theirs() -> None:
    slots = Slots(2, concurrency=3)
    slots.start(1, job_id=7, lease_token=1, timeout_seconds=0, entry=0, is_async=True)
    slots.start(1, job_id=8, lease_token=2, timeout_seconds=5, entry=2, is_async=True)
    assert [r.job_id for r in slots.running_all(1)] == [7, 8]
    assert slots.running_all(0) == []
    assert slots.request_cancel(1, 8, grace_seconds=1) and not slots.request_cancel(1, 9, 1)
    assert slots.cancel_requested(1, 8) and not slots.cancel_requested(1, 7)
    assert slots.cancel_deadline_ms(1, 2) >= now_ms() and slots.cancel_deadline_ms(1, 0) == 0
    slots.put(1, slot_fields.PID_LOOP, 55)
    assert slots.backend_pids(1) == [55] and slots.backend_pids(0) == []
    slots.finish(1, 0)
    assert [r.entry for r in slots.running_all(1)] == [2]


# -- payload encoding ---------------------------------------------------------


def test_payloads_encode_to_compact_json_with_dates_uuids_and_decimals_as_text() -> None:
    when = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
    key = uuid.UUID(int=1)
    text = encode({"at": when, "id": key, "amount": decimal.Decimal("1.50"), "n": [1, 2]})
    assert json.loads(text) == {
        "at": when.isoformat(),
        "id": str(key),
        "amount": "1.50",
        "n": [1, 2],
    }


@pytest.mark.parametrize(
    "payload",
    [
        {"x": math.nan},
        {"x": math.inf},
        {"x": decimal.Decimal("NaN")},
        {"x": object()},
        {"x": 2.0**60},
        {1: "non-text key"},
    ],
)
def test_payloads_json_cannot_hold_exactly_are_refused(payload: object) -> None:
    with pytest.raises(InvalidJob):
        encode(payload)


def test_payloads_nested_deeper_than_the_limit_are_refused() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(MAX_DEPTH + 1):
        node["x"] = {}
        node = node["x"]  # type: ignore[assignment]
    with pytest.raises(InvalidJob):
        encode(deep)


# -- batch sizing ---------------------------------------------------------------


def test_the_batch_starts_at_one_and_grows_at_most_fourfold_while_jobs_are_short() -> None:
    size = BatchSize(limit=100)
    assert size.current == 1
    assert size.adapt(1, 0.0001, full=True) == 4
    assert size.adapt(4, 0.0004, full=True) == 16
    assert size.adapt(16, 0.0016, full=True) == 64
    assert size.adapt(64, 0.0064, full=True) == 100  # never past the configured batch size


def test_the_batch_holds_about_fifty_milliseconds_of_work() -> None:
    size = BatchSize(limit=1000)
    for _ in range(20):
        size.adapt(size.current, size.current * 0.005, full=True)  # 5 ms a job
    assert size.current in (10, 11)  # 50 ms / 5 ms, rounded up


def test_slow_jobs_are_claimed_one_at_a_time() -> None:
    size = BatchSize(limit=100)
    for _ in range(5):
        size.adapt(size.current, size.current * 2.0, full=True)
    assert size.current == 1


# -- durations and backoff -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("5m", 300), ("2h", 7200), ("30d", 2_592_000), ("250ms", 0.25)],
)
def test_durations_read_in_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 weeks", "-1s", "1.s"])
def test_durations_that_do_not_parse_are_refused(text: str) -> None:
    with pytest.raises(InvalidJob):
        parse_duration(text)


def test_backoff_doubles_up_to_its_cap_and_starts_afresh_after_a_reset() -> None:
    backoff = Backoff(first=0.1, cap=0.5)
    assert [backoff.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next() == 0.1


# -- the statement layer's parameters ---------------------------------------------


def _job(job_id: int, token: int) -> ClaimedJob:
    return ClaimedJob(job_id, "t", None, {}, 1, 3, 0, None, token)


def test_completions_are_sent_as_array_and_json_literals_in_input_order() -> None:
    bound = complete_many.bind([(_job(1, 10), Completed('{"a":1}', 1.5)),
                                (_job(2, 20), Completed(None, 2.0))])  # fmt: skip
    assert bound.params == {
        "ids": "{1,2}",
        "tokens": "{10,20}",
        "results": '[{"a":1},null]',
        "durations": "{1.5,2.0}",
        "now": None,
    }
    assert "job_complete_many" not in bound.query and "pgjobs.complete_many(" in bound.query


def test_failures_carry_one_array_per_column_for_jobs_and_slot_leases_alike() -> None:
    killed = Failed("timeout", "the job exceeded its timeout", None, False, None)
    bound = fail_many.bind([(_job(1, 10), Failed("Boom", "no", "tb", True, 3.0)),
                            (Lease(2, 20), killed)])  # fmt: skip
    assert bound.params == {
        "ids": [1, 2],
        "tokens": [10, 20],
        "error_classes": ["Boom", "timeout"],
        "messages": ["no", "the job exceeded its timeout"],
        "tracebacks": ["tb", None],
        "permanent": [True, False],
        "durations": [3.0, None],
        "now": None,
    }
