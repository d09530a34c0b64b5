"""How often a worker's processes look whether a vacuum is due, and how many
dead tuples make one due (pgjobs/worker/maintenance.py). No database: the
look itself is replaced by a counter."""

from __future__ import annotations

from typing import Any

import pytest
import structlog

from pgjobs.worker import maintenance
from pgjobs.worker.maintenance import Vacuum, vacuum_threshold


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _looks(monkeypatch: pytest.MonkeyPatch, processes: int, seconds: float) -> int:
    """Looks a worker of ``processes`` processes makes over ``seconds``, each
    process asking after a batch every 50 ms."""
    clock = _Clock()
    monkeypatch.setattr(maintenance.time, "monotonic", clock)
    looks: list[Any] = []

    def turn(conn: Any, **params: Any) -> tuple[bool, None]:
        looks.append(params)
        return False, None

    monkeypatch.setattr(maintenance.statements, "vacuum_turn", turn)
    log = structlog.get_logger("test")
    duties = [Vacuum(log, f"test/{i}", processes=processes) for i in range(processes)]
    for _ in range(int(seconds / 0.05)):
        clock.now += 0.05
        for duty in duties:
            duty.if_due(None)  # type: ignore[arg-type]
    return len(looks)


def test_a_worker_looks_about_once_a_second_whatever_its_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """64 processes look about as often as one (each once a second, before,
    made 64 looks a second, each reading pg_stat_activity and the table
    statistics)."""
    assert 10 <= _looks(monkeypatch, 1, 20.0) <= 21
    assert 10 <= _looks(monkeypatch, 64, 20.0) <= 40


def test_the_threshold_grows_with_the_processes_past_twenty() -> None:
    """Each vacuum makes every process's session plan its statements again:
    with more sessions, more dead tuples must make a vacuum worth it."""
    assert [vacuum_threshold(n) for n in (1, 8, 20)] == [10_000] * 3
    assert vacuum_threshold(64) == 32_000
