"""RQ worker process: ``python -m bench.apps.rq REDIS_URL``; a SimpleWorker (no
fork per job), as the issue compares: the forking one pays ~20 ms a job."""

from __future__ import annotations

import sys

from bench.apps import ping as _ping


def noop() -> None:
    return None


def ping(seq: int) -> None:
    _ping.report(seq)


def main() -> None:
    from redis import Redis
    from rq import Queue, SimpleWorker

    redis = Redis.from_url(sys.argv[1])
    SimpleWorker([Queue("default", connection=redis)], connection=redis).work(
        logging_level="WARNING"
    )


if __name__ == "__main__":
    main()
