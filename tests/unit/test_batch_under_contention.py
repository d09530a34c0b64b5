"""Batch sizing with more processes than cores: time spent
waiting for a CPU is not work, and a deep queue never shrinks the claim."""

from __future__ import annotations

from pgjobs.worker.executor import BatchSize


def test_a_full_claim_never_shrinks_the_next_one() -> None:
    size = BatchSize(limit=100)
    for _ in range(4):
        size.adapt(size.current, size.current * 0.0005, full=True)  # short jobs: to the limit
    assert size.current == 100
    size.adapt(100, 100 * 0.5, full=True)  # one slow batch while the queue holds more
    assert size.current == 100
    size.adapt(10, 10 * 0.5, full=False)  # the queue ran short: size by the time again
    assert size.current < 100


def test_the_size_follows_handler_time() -> None:
    size = BatchSize(limit=100)
    for _ in range(6):
        size.adapt(size.current, size.current * 0.001, full=True)  # 1 ms handlers
    assert size.current == 50  # 50 ms of handler time


def test_a_short_claim_claims_no_more_than_it_got_next_time() -> None:
    """A shallow queue: the next claim takes what it can use, not 50 ms ahead,
    so a job that comes meanwhile is left to an idle sibling."""
    size = BatchSize(limit=100)
    for _ in range(4):
        size.adapt(size.current, size.current * 0.0001, full=True)
    assert size.current == 100
    assert size.adapt(1, 0.0001, full=False) == 1  # a trickle: one at a time
    assert size.adapt(1, 0.0001, full=True) == 4  # it came back full: grow again
    assert size.adapt(3, 0.0003, full=False) == 3


def test_an_empty_claim_makes_the_next_one_a_single_job() -> None:
    size = BatchSize(limit=100)
    for _ in range(4):
        size.adapt(size.current, size.current * 0.0001, full=True)
    size.emptied()  # the queue ran dry: what comes next is left to idle siblings
    assert size.current == 1
