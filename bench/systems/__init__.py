"""The queues the harness knows, by name, in report order."""

from __future__ import annotations

from bench.systems.base import System
from bench.systems.oban import Oban
from bench.systems.pgjobs import PgJobs
from bench.systems.pgqueuer import PgQueuer
from bench.systems.procrastinate import Procrastinate
from bench.systems.rq import RQ

ALL: dict[str, type[System]] = {
    cls.name: cls for cls in (PgJobs, Procrastinate, PgQueuer, Oban, RQ)
}

__all__ = ["ALL", "System"]
