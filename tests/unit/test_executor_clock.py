"""The executor's run-queue clock (pgjobs/worker/executor.py): a batch is
sized by its handlers' time less their waits for a CPU, and that wait is read
from /proc twice per batch, not around every job."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pgjobs.registry import Registry
from pgjobs.statements import ClaimedJob
from pgjobs.worker.beacon import Leases
from pgjobs.worker.completer import Completer
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.executor import Executor
from pgjobs.worker.slots import Slots
from tests.unit.test_completer_clock import CountingClock


class _Open:
    closed = False


def _executor(handler: Any) -> tuple[Executor, CountingClock, list[tuple[int, float]]]:
    types = Registry()
    types.job("t.clocked")(handler)
    completer = Completer(WorkerConfig(dsn="", flush_seconds=60.0), Leases(), Slots(1), 0, log=None)
    completer.run_queue.close()
    clock = CountingClock()
    completer.run_queue = clock  # type: ignore[assignment]
    completer.clock = clock.work_time
    completer.flush = lambda: completer.done.clear()  # type: ignore[method-assign]
    executor = Executor(types, completer, Slots(1), 0, "w", lambda: False, None, 100)
    adapted: list[tuple[int, float]] = []
    adapt = executor.batch.adapt

    def spy(count: int, seconds: float, *, full: bool = False) -> int:
        adapted.append((count, seconds))
        return adapt(count, seconds, full=full)

    executor.batch.adapt = spy  # type: ignore[method-assign]
    return executor, clock, adapted


def _jobs(n: int) -> list[ClaimedJob]:
    return [ClaimedJob(i, "t.clocked", None, {}, 1, 1, 0, None, 7) for i in range(1, n + 1)]


def noop(ctx: Any) -> None:
    return None


# What ``slow`` moves: the monotonic clock's time and the run-queue clock.
_FAKE: dict[str, Any] = {}


def slow(ctx: Any) -> None:
    """10 ms of wall time, 8 ms of it waiting for a CPU."""
    _FAKE["now"] += 0.010
    _FAKE["clock"].wait += 0.008


def test_a_batch_reads_the_run_queue_clock_twice_whatever_its_size() -> None:
    executor, clock, adapted = _executor(noop)
    executor.run_batch(_Open(), _jobs(100))  # type: ignore[arg-type]
    assert clock.reads == 2 + 1  # the batch's two, and the completer's first outcome
    assert [count for count, _ in adapted] == [100]


def test_the_handlers_time_leaves_out_their_share_of_the_wait_for_a_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each 10 ms handler waits 8 ms of it for a CPU: 2 ms of work each."""
    _FAKE["now"] = 100.0
    monkeypatch.setattr(time, "monotonic", lambda: _FAKE["now"])
    executor, clock, adapted = _executor(slow)
    _FAKE["clock"] = clock
    executor.run_batch(_Open(), _jobs(10))  # type: ignore[arg-type]
    [(count, seconds)] = adapted
    assert count == 10
    assert seconds == pytest.approx(10 * 0.002)
