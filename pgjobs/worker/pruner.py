"""``pgjobs worker --prune-after 30d``: retention, run by the worker itself.

The supervisor forks a short-lived pruner process at start and then once per
``prune_every_seconds``: a long delete never delays the supervisor's tick, and
a failed run costs nothing but a log line (the next run picks up the rest).
Across every worker on the database, one pruner runs at a time: the run holds
a session advisory lock, and a pruner that cannot take it leaves at once.
"""

from __future__ import annotations

import psycopg
import structlog

from pgjobs import retention
from pgjobs.worker.child import become_child, leave
from pgjobs.worker.config import WorkerConfig

logger = structlog.get_logger("pgjobs.pruner")

EXIT_OK = 0
EXIT_FAILED = 1


def prune_once(cfg: WorkerConfig, worker: str) -> int | None:
    """One run: how many jobs went, or None if another worker's pruner holds the lock."""
    from pgjobs.worker.runner import connect

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
