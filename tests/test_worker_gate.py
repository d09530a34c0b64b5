"""The gate (pgjobs/worker/gate.py): at most ``width`` of one supervisor's
processes inside a claim or a completion write at once, and a process killed
-9 inside leaves its slot to its siblings at once (the kernel drops its locks),
with no supervisor to repair anything.

Real processes, forked as the supervisor forks its workers, after the gate is
made."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import pytest

from pgjobs.worker.gate import WIDTH_ENV, Gate, width_for
from tests.support import workers
from tests.test_lifecycle_crash import _completed, _enqueue_work, assert_each_completed_once

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the worker forks")

_MP = multiprocessing.get_context("fork")
_DEADLINE = 20.0


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = _DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {timeout}s"
        time.sleep(0.01)


def _hold_forever(gate: Gate, index: int, inside: Any) -> None:
    with gate.passage(index):
        inside.set()
        while True:
            time.sleep(60)


def _pass_once(gate: Gate, index: int, passed: Any) -> None:
    with gate.passage(index):
        passed.set()
    os._exit(0)


def _count_inside(
    gate: Gate, index: int, rounds: int, inside: Synchronized[int], most: Synchronized[int]
) -> None:
    for _ in range(rounds):
        with gate.passage(index):
            with inside.get_lock():
                inside.value += 1
                most.value = max(most.value, inside.value)
            time.sleep(0.001)  # a claim's few milliseconds, shortened
            with inside.get_lock():
                inside.value -= 1
    os._exit(0)


def _start(target: Callable[..., None], *args: Any) -> Any:
    proc = _MP.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def test_a_process_killed_inside_leaves_its_slot_to_a_waiting_sibling() -> None:
    """A sibling waits while the only slot is held; the holder is killed -9
    (no finally, no release, no supervisor), and the sibling gets in."""
    gate = Gate(1)
    inside, passed = _MP.Event(), _MP.Event()
    holder = _start(_hold_forever, gate, 0, inside)
    try:
        assert inside.wait(_DEADLINE), "the holder never got in"
        sibling = _start(_pass_once, gate, 1, passed)
        # The gate holds: no sibling inside beside the holder (a wait that
        # proves nothing if too short, never a false failure).
        assert not passed.wait(0.5), "a sibling got in beside the holder"
        os.kill(holder.pid, signal.SIGKILL)
        assert passed.wait(_DEADLINE), "the killed holder's slot stayed taken"
        sibling.join(_DEADLINE)
        assert sibling.exitcode == 0
    finally:
        holder.kill()
        holder.join(_DEADLINE)
        gate.close()


def test_no_more_than_width_inside_at_once_even_as_holders_are_killed() -> None:
    """Eight processes through a gate two wide, over and over, one of them
    killed -9 while it holds a slot: never three inside, and the others all
    get through."""
    gate = Gate(2)
    inside: Synchronized[int] = _MP.Value("i", 0)
    most: Synchronized[int] = _MP.Value("i", 0)
    held = _MP.Event()
    victim = _start(_hold_forever, gate, 0, held)
    assert held.wait(_DEADLINE)
    workers = [_start(_count_inside, gate, i, 100, inside, most) for i in range(1, 8)]
    time.sleep(0.2)  # the others pass through the one slot left meanwhile
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(_DEADLINE)
    try:
        _wait_for(lambda: all(not w.is_alive() for w in workers), "every process through")
        assert [w.exitcode for w in workers] == [0] * 7
        assert 1 <= most.value <= 2, f"{most.value} processes inside a gate two wide"
    finally:
        for w in workers:
            w.kill()
        gate.close()


def test_a_passage_inside_a_passage_takes_no_second_slot() -> None:
    """The claim takes the gate and flushes outcomes inside it, which takes
    it again: a process never waits for itself, nor holds two slots."""
    gate = Gate(1)
    try:
        with gate.passage(0):
            held = gate.held
            with gate.passage(0):
                assert gate.held == held
            assert gate.held == held
        assert gate.held == -1
    finally:
        gate.close()


@pytest.mark.slow
def test_a_gated_worker_whose_processes_are_killed_9_still_completes_every_job_once(
    dsn: str, wait_for: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker of three processes through a gate one wide (every claim and
    write of theirs takes the one slot in turn); processes killed -9 mid-drain,
    inside the gate or not, hold up none of their siblings: every job
    completes, once."""
    monkeypatch.setenv(WIDTH_ENV, "1")
    workers.prepare(dsn)
    ids = _enqueue_work(dsn, 300, seconds=0.005)
    with workers.workers(dsn) as pool:
        worker = pool.start(processes=3, lease=2)
        for kill in range(3):
            wait_for(
                lambda kill=kill: _completed(dsn) > 40 * (kill + 1),
                timeout=30,
                message="the drain stalled",
            )
            wait_for(lambda: len(worker.children()) == 3, timeout=10)  # replaced
            victim = worker.children()[kill % 3]
            workers.signal_pid(victim, signal.SIGKILL)
            wait_for(lambda victim=victim: victim not in worker.children(), timeout=10)
        wait_for(
            lambda: _completed(dsn) == len(ids),
            timeout=60,
            message="not every job completed after the kills",
        )
        assert worker.proc.poll() is None
    assert_each_completed_once(dsn, ids)


def test_no_gate_until_the_processes_are_many_more_than_the_cpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(WIDTH_ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert [width_for(n) for n in (1, 2, 8, 9, 64)] == [0, 0, 0, 2, 2]
    monkeypatch.setenv(WIDTH_ENV, "1")
    assert width_for(2) == 1
