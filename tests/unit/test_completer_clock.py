"""The completer's flush clock (pgjobs/worker/completer.py): outcomes wait at
most ``flush_seconds`` of work time, a clock that stands still while the
process waits for a CPU (pgjobs/worker/cpuwait.py). That clock is a read of
/proc, several microseconds; the wall clock, which work time never outruns,
decides first whether it is worth reading."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pgjobs.statements import ClaimedJob, Completed
from pgjobs.worker.beacon import Leases
from pgjobs.worker.completer import Completer
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.slots import Slots


class CountingClock:
    """A run-queue clock whose wait the test sets, counting its reads."""

    def __init__(self) -> None:
        self.reads = 0
        self.wait = 0.0

    def seconds(self) -> float:
        self.reads += 1
        return self.wait

    def work_time(self) -> float:
        return time.monotonic() - self.seconds()


def _completer(flush_seconds: float) -> tuple[Completer, CountingClock, list[int]]:
    completer = Completer(
        WorkerConfig(dsn="", flush_seconds=flush_seconds), Leases(), Slots(1), 0, log=None
    )
    clock = CountingClock()
    completer.run_queue.close()
    completer.run_queue = clock  # type: ignore[assignment]
    completer.clock = clock.work_time
    flushed: list[int] = []

    def flush() -> None:
        flushed.append(len(completer.done))
        completer.done = []

    completer.flush = flush  # type: ignore[method-assign]
    return completer, clock, flushed


def _job(i: int) -> ClaimedJob:
    return ClaimedJob(i, "t", None, {}, 1, 1, 0, None, 7)


def test_recording_outcomes_reads_the_run_queue_clock_once_per_batch_not_per_job() -> None:
    completer, clock, flushed = _completer(flush_seconds=60.0)
    for i in range(100):
        completer.record(_job(i), Completed(None, 0.1), False)
    assert not flushed and len(completer.done) == 100
    assert clock.reads == 1  # when the first outcome was kept (it was 101)


def test_outcomes_are_flushed_after_flush_seconds_of_work_not_of_waiting_for_a_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    completer, clock, flushed = _completer(flush_seconds=0.05)
    completer.record(_job(1), Completed(None, 0.1), False)
    now[0] += 0.01  # too soon by the wall clock: the run-queue clock is not read
    reads = clock.reads
    completer.record(_job(2), Completed(None, 0.1), False)
    assert not flushed and clock.reads == reads
    now[0] += 0.09  # 0.1 s of wall time, 0.08 of it waiting for a CPU: 0.02 s of work
    clock.wait += 0.08
    completer.record(_job(3), Completed(None, 0.1), False)
    assert not flushed
    now[0] += 0.1  # 0.1 s more, 0.02 of it waiting: 0.1 s of work in all
    clock.wait += 0.02
    completer.record(_job(4), Completed(None, 0.1), False)
    assert flushed == [4]


def test_a_flush_due_by_work_time_is_never_held_back(monkeypatch: Any) -> None:
    """No wait for a CPU: work time is the wall time, and the outcome kept
    first is written once flush_seconds have passed, as before."""
    now = [50.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    completer, _, flushed = _completer(flush_seconds=0.02)
    completer.record(_job(1), Completed(None, 0.1), False)
    now[0] += 0.02
    completer.record(_job(2), Completed(None, 0.1), False)
    assert flushed == [2]
