"""Maintenance the workers do themselves: vacuuming the unfinished jobs,
making the partitions of finished jobs ahead of time, and retention
(``pgjobs worker --prune-after 30d``).

Vacuum: claimed jobs leave dead entries at the head of the claim's index,
which every claim steps over until VACUUM removes them, so a busy queue
decays without it. Workers that may vacuum (the table's owner, a superuser)
do so when enough dead tuples have piled up, checked about once a second by
one of a supervisor's processes or another, one worker at a time: the one
that took the vacuum turn (a row of pgjobs.maintenance_leases, which no role
without pgjobs grants can take or block, released when done and expiring if
its holder dies).

"Enough" grows with the worker's processes. A vacuum writes the table's
statistics into pg_class, which invalidates every session's cached plans of
the statements that read or write the table: each process's session then
plans its claim, its write and their triggers' statements again at its next
turn, milliseconds of server time each. At 64 processes on 2 cores that was
half the claims, and the server's planning went from 6% of its time at 32
processes to 17% (docs/scaling.md, section 1). With the threshold in step
with the sessions, a vacuum clears as many dead tuples for each plan it
costs, whatever their number.

Prune: the supervisor forks a short-lived pruner process at start and then
once per ``prune_every_seconds``: a long delete never delays the supervisor's
tick, and a failed run costs nothing but a log line (the next run picks up
the rest). Across every worker on the database one pruner runs at a time: the
run holds the prune turn (the same table), and a pruner that cannot take it
leaves.
"""

from __future__ import annotations

import multiprocessing.context
import random
import time
from typing import Any

import psycopg
import structlog

from pgjobs import pooler, retention
from pgjobs.statements import maintenance as statements
from pgjobs.worker.child import become_child, leave
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.session import connect

logger = structlog.get_logger("pgjobs.pruner")

_VACUUM_CHECK_SECONDS = 1.0  # how often a worker looks, all its processes together
_VACUUM_DEAD_TUPLES = 10_000
_VACUUM_DEAD_TUPLES_PER_PROCESS = 500  # past 20 processes, the threshold grows with them
_VACUUM_DEAD_SHARE = 0.05  # of the live tuples, when that is more
_VACUUM_TURN_SECONDS = 600.0  # a vacuuming worker that dies gives its turn back this soon
_PARTITIONS_CHECK_SECONDS = 60.0
_PRUNE_RETRY_SECONDS = 300.0  # a failed prune run (Postgres away, say) is retried this soon

EXIT_OK = 0
EXIT_FAILED = 1


def vacuum_threshold(processes: int) -> int:
    """The dead tuples that make a vacuum due for a worker of ``processes``
    processes (or a share of the live ones, when that is more)."""
    return max(_VACUUM_DEAD_TUPLES, _VACUUM_DEAD_TUPLES_PER_PROCESS * processes)


class Vacuum:
    """A process's vacuum duty, checked after each batch it ran, about once
    per ``processes`` seconds: once a second for the worker's processes
    together, whatever their number (a look reads pg_stat_activity and the
    table statistics, and is planned anew each time). The first look comes
    at a random point of the first period, so the processes' looks spread."""

    def __init__(
        self, log: Any, holder: str, processes: int = 1, threshold: int | None = None
    ) -> None:
        self.log = log
        self.holder = holder
        self.threshold = vacuum_threshold(processes) if threshold is None else threshold
        self.every_seconds = _VACUUM_CHECK_SECONDS * processes
        self.next_check = time.monotonic() + random.uniform(0.0, self.every_seconds)
        # The transaction that held back the last vacuum: while it still
        # does, another vacuum could remove nothing (jobs_vacuum_turn).
        self.horizon: str | None = None

    def if_due(self, conn: psycopg.Connection[Any]) -> bool:
        """Vacuums if it is time to look and a vacuum can help; whether it did."""
        now = time.monotonic()
        if now < self.next_check:
            return False
        self.next_check = now + self.every_seconds
        due, horizon = statements.vacuum_turn(
            conn,
            holder=self.holder,
            seconds=_VACUUM_TURN_SECONDS,
            threshold=self.threshold,
            scale=_VACUUM_DEAD_SHARE,
            last_horizon=self.horizon,
        )
        if not due:
            return False
        self.horizon = horizon
        try:
            started = time.monotonic()
            # VACUUM cannot run in a transaction block, so behind a pooler it
            # runs without the per-transaction settings (the server's timeouts).
            with pooler.bare(conn):
                statements.vacuum(conn)
            self.log.info("jobs_vacuumed", seconds=round(time.monotonic() - started, 3))
            return True
        except psycopg.errors.QueryCanceled as exc:  # statement_timeout: the next one goes on
            self.log.warning("jobs_vacuum_canceled", error=str(exc))
            return False
        finally:
            statements.lease_release(conn, duties=["vacuum"], holder=self.holder)


class Partitions:
    """The worker's partition duty: the partitions of finished jobs for this
    period and the next few exist (pgjobs.partitions_ensure, which makes them
    as the owner). Every worker process looks about once a minute, from its
    first turn on: a look costs a few catalog probes, and a partition made
    twice at once is made once (the function skips what exists)."""

    def __init__(self, log: Any, every_seconds: float = _PARTITIONS_CHECK_SECONDS) -> None:
        self.log = log
        self.every_seconds = every_seconds
        self.next_check = 0.0  # at the first turn

    def if_due(self, conn: psycopg.Connection[Any]) -> int:
        """Makes the partitions missing if it is time to look; how many it made."""
        now = time.monotonic()
        if now < self.next_check:
            return 0
        self.next_check = now + self.every_seconds
        made = statements.partitions_ensure(conn) or 0
        if made:
            self.log.info("partitions_made", partitions=made)
        return made


class Pruner:
    """The supervisor's side: forks the pruner at start and on schedule."""

    def __init__(
        self, cfg: WorkerConfig, mp: Any, worker: str, log_json: bool | None, log_level: str
    ) -> None:
        self.cfg = cfg
        self.mp = mp
        self.args = (cfg, worker, log_json, log_level)
        self.proc: multiprocessing.context.ForkProcess | None = None
        self.next_run = 0.0  # at start, then every prune_every_seconds

    @property
    def running(self) -> bool:
        return self.proc is not None

    def keep(self) -> None:
        now = time.monotonic()
        if self.proc is not None and not self.proc.is_alive():
            self.proc.join(0)
            if self.proc.exitcode != 0:
                self.next_run = min(self.next_run, now + _PRUNE_RETRY_SECONDS)
            self.proc = None
        due = self.cfg.prune_after_seconds is not None and now >= self.next_run
        if due and self.proc is None:
            self.proc = self.mp.Process(
                target=pruner_main, args=self.args, name="pgjobs-pruner", daemon=False
            )
            self.proc.start()
            self.next_run = now + self.cfg.prune_every_seconds


def prune_once(cfg: WorkerConfig, worker: str) -> int | None:
    """One run: how many jobs went, or None if another worker's pruner holds the lock."""
    assert cfg.prune_after_seconds is not None
    log = logger.bind(worker=worker)
    with connect(cfg, "pruner") as conn:
        pruned = retention.prune_exclusive(
            conn,
            cfg.prune_after_seconds,
            progress=lambda n: log.info("prune_progress", pruned=n),
        )
    if pruned is None:
        log.info("prune_skipped", reason="another worker is pruning")
    else:
        log.info("prune_done", pruned=pruned, older_than_seconds=cfg.prune_after_seconds)
    return pruned


def pruner_main(cfg: WorkerConfig, worker: str, log_json: bool | None, log_level: str) -> None:
    """Entry point of the forked pruner process; leaves by os._exit (see runner)."""
    code = EXIT_OK
    try:
        become_child(log_json, log_level)
        prune_once(cfg, worker)
    except psycopg.Error as exc:
        logger.warning("prune_failed", error=str(exc).strip(), worker=worker)
        code = EXIT_FAILED
    except BaseException:
        logger.exception("prune_failed", worker=worker)
        code = EXIT_FAILED
    finally:
        leave(code)
