"""The listening turn through a batch (pgjobs/worker/wakeups.py): the holder
keeps it while a batch is shorter than the handover time, and gives it to a
sibling (ringing) once the batch runs past it. No database: one process's
Wakeups and the supervisor's Doorbell, its semaphores in this process."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable

from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.slots import Slots
from pgjobs.worker.wakeups import Doorbell, Handover, Wakeups


def _holder(handover_seconds: float) -> tuple[Wakeups, Doorbell]:
    """Process 0 of two, holding the turn (not listening: no session here)."""
    doorbell = Doorbell(multiprocessing.get_context("fork"))
    wakeups = Wakeups(WorkerConfig(dsn="", processes=2), threading.Event(), doorbell, Slots(2), 0)
    wakeups.handover = Handover(wakeups.release, handover_seconds)
    assert wakeups._take()
    return wakeups, doorbell


def _until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.001)
    return condition()


def test_a_batch_shorter_than_the_handover_keeps_the_turn() -> None:
    """Before, every claim gave the turn up and rang a sibling, which then
    listened and claimed for nothing while the short job ran."""
    wakeups, doorbell = _holder(handover_seconds=60.0)
    wakeups.claimed(full=False)
    wakeups.after_batch()
    assert wakeups.holding
    assert not doorbell.turn.acquire(False)  # no sibling can take it
    assert not doorbell.wait(0)  # and none was rung


def test_a_batch_running_past_the_handover_gives_the_turn_to_a_sibling() -> None:
    wakeups, doorbell = _holder(handover_seconds=0.01)
    wakeups.claimed(full=False)
    assert _until(lambda: not wakeups.holding)
    assert doorbell.wait(0)  # rung
    assert doorbell.turn.acquire(False)  # a sibling takes it
    wakeups.after_batch()
    assert not wakeups.holding  # taken: this one stops listening


def test_a_full_claim_rings_at_once_and_keeps_the_turn_for_the_handover() -> None:
    """A full claim means more is waiting: a sibling is rung to claim it,
    whoever listens."""
    wakeups, doorbell = _holder(handover_seconds=60.0)
    wakeups.claimed(full=True)
    assert doorbell.wait(0)
    assert wakeups.holding
    wakeups.after_batch()
    assert wakeups.holding


def test_a_batch_ended_before_the_handover_is_never_handed_over_later() -> None:
    wakeups, doorbell = _holder(handover_seconds=0.05)
    wakeups.claimed(full=False)
    wakeups.after_batch()
    time.sleep(0.15)  # past the deadline the batch had: nothing may fire now
    assert wakeups.holding
    assert not doorbell.wait(0)
