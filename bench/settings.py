"""How big each measurement is, per mode (full, --quick, the smoke test)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Sizes:
    runs: int = 3
    enqueue_jobs: int = 10_000  # per enqueue measurement, spread over the clients
    enqueue_clients: int = 2
    bulk_batch: int = 100
    drain_jobs: int = 50_000
    drain_processes: tuple[int, ...] = (1, 2, 4)
    latency_samples: int = 200
    claim_finished: int = 1_000_000
    claim_queued: int = 100_000
    claim_samples: int = 200
    claim_batch: int = 10
    sustained_seconds: float = 600.0
    sustained_window: float = 30.0
    sustained_fraction: float = 0.7
    # After the steady part, each pressure phase of the sustained run lasts this
    # long: a transaction left idle, a recovery, REPEATABLE READ count(*) loops.
    pressure_seconds: float = 120.0
    # The same pressure phases at issue 19's own offered rate (jobs/s; 0: not
    # run), after pressure_lead_seconds of that load alone, with a recovery of
    # pressure_recovery_seconds between them (a light load drains at once).
    pressure_rate: float = 800.0
    pressure_lead_seconds: float = 30.0
    pressure_recovery_seconds: float = 30.0
    # The sustained run again (no pressure phases) at this fraction of the peak,
    # once on empty tables and once beside this many finished jobs and their
    # history, finished over the last backlog_days (seeded server-side and
    # vacuumed: under 3 minutes for 10M here). The ratio of the two is the
    # figure, so shorter runs than the steady part's serve.
    backlog_fraction: float = 0.9
    backlog_finished: int = 10_000_000
    backlog_days: float = 7.0
    backlog_seconds: float = 180.0
    floor_clients: tuple[int, ...] = (2, 8)
    floor_transactions: int = 2_000  # per client, per pgbench script
    worker_timeout: float = 600.0  # a drain that takes longer is a failure
    hosts_jobs: int = 100_000  # per drain of the multi-host figure (bench/hosts.py)


FULL = Sizes()

QUICK = dataclasses.replace(
    FULL,
    enqueue_jobs=4_000,
    drain_jobs=10_000,
    latency_samples=100,
    claim_finished=200_000,
    claim_queued=20_000,
    claim_samples=100,
    sustained_seconds=60.0,
    sustained_window=10.0,
    pressure_seconds=30.0,
    pressure_lead_seconds=10.0,
    pressure_recovery_seconds=10.0,
    backlog_finished=1_000_000,
    backlog_seconds=60.0,
    floor_clients=(2,),
    floor_transactions=1_000,
    worker_timeout=300.0,
    hosts_jobs=30_000,
)

# The smoke test: every figure produced, none of them meaningful. Its timed
# runs are as short as gives every phase of each its windows (one or two of
# half a second): the run is a check that figures come out, and its wall time
# is the suite's.
TINY = dataclasses.replace(
    FULL,
    runs=1,
    enqueue_jobs=100,
    drain_jobs=200,
    latency_samples=10,
    claim_finished=2_000,
    claim_queued=200,
    claim_samples=10,
    sustained_seconds=1.0,
    sustained_window=0.5,
    pressure_seconds=0.5,
    pressure_lead_seconds=0.5,
    pressure_recovery_seconds=0.5,
    backlog_finished=2_000,
    backlog_seconds=1.0,
    floor_clients=(2,),
    floor_transactions=20,
    worker_timeout=60.0,
    hosts_jobs=300,
)
