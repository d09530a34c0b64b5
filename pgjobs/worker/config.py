"""Worker settings, shared by the supervisor and its processes (picklable)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    dsn: str
    queues: tuple[str, ...] = ("default",)
    processes: int = 2
    imports: tuple[str, ...] = ()
    # Async handlers in flight per process, on its one event loop (sync
    # handlers run one at a time whatever this says).
    concurrency: int = 1
    batch_size: int = 100
    lease_seconds: float = 30.0
    poll_seconds: float = 5.0  # the safety net under LISTEN
    grace_seconds: float = 30.0  # SIGTERM: how long running jobs may finish
    cancel_grace_seconds: float = 5.0  # a canceled job's time to return before the kill
    listen: bool = True  # False: poll only (PgBouncer in transaction mode)
    # Through a transaction-mode pooler (pgjobs.pooler): True, False, or None to
    # ask PGJOBS_POOLER, then detect. Pooled, the worker polls: for work every
    # pooler_poll_seconds, for cancels of running jobs every cancel_poll_seconds.
    pooler: bool | None = None
    pooler_poll_seconds: float = 1.0
    cancel_poll_seconds: float = 0.5
    statement_timeout_seconds: float = 60.0
    flush_seconds: float = 0.02  # the longest a finished job waits to be written
    exit_when_idle: bool = False  # stop once nothing is due (demo, tests)
    metrics_port: int | None = None  # serve Prometheus text here (0: any free port)
    metrics_host: str = "127.0.0.1"
    metrics_timeout_seconds: float = 2.0  # statement_timeout of a scrape's queries
    prune_after_seconds: float | None = None  # retention: finished jobs older than this go
    prune_every_seconds: float = 86400.0  # and the pruner runs this often (and at start)

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ValueError("processes must be at least 1")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.batch_size < 1:
            raise ValueError("batch size must be at least 1")
        if self.lease_seconds <= 0:
            raise ValueError("lease must be positive")
        if not self.queues:
            raise ValueError("at least one queue")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError("metrics port must be from 0 to 65535")
        if self.prune_after_seconds is not None and self.prune_after_seconds <= 0:
            raise ValueError("prune-after must be positive")
        if self.pooler_poll_seconds <= 0 or self.cancel_poll_seconds <= 0:
            raise ValueError("poll intervals must be positive")
        if self.prune_every_seconds <= 0:
            raise ValueError("the prune interval must be positive")

    @property
    def heartbeat_seconds(self) -> float:
        return self.lease_seconds / 3
