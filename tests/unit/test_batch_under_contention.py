"""Batch sizing with more processes than cores: time spent
waiting for a CPU is not work, and a deep queue never shrinks the claim."""

from __future__ import annotations

from pgjobs.worker.executor import BatchSize


def test_a_full_claim_never_shrinks_the_next_one() -> None:
    size = BatchSize(limit=100)
    for _ in range(4):
        size.adapt(size.current, size.current * 0.0005)  # short jobs: grows to the limit
    assert size.current == 100
    size.adapt(100, 100 * 0.5, full=True)  # one slow batch while the queue holds more
    assert size.current == 100
    size.adapt(10, 10 * 0.5, full=False)  # the queue ran short: size by the time again
    assert size.current < 100


def test_the_size_follows_handler_time() -> None:
    size = BatchSize(limit=100)
    for _ in range(6):
        size.adapt(size.current, size.current * 0.001)  # 1 ms handlers
    assert size.current == 50  # 50 ms of handler time
