"""procrastinate worker process: ``python -m bench.apps.procrastinate DSN CONCURRENCY``."""

from __future__ import annotations

import asyncio
import sys

import procrastinate

from bench.apps import ping as _ping

app = procrastinate.App(connector=procrastinate.PsycopgConnector())


@app.task(name="bench.noop", queue="default")
async def noop() -> None:
    return None


@app.task(name="bench.sleep", queue="default")
async def sleep() -> None:
    await asyncio.sleep(_ping.SLEEP_SECONDS)


@app.task(name="bench.ping", queue="default")
async def ping(seq: int) -> None:
    _ping.report(seq)


def main() -> None:
    dsn, concurrency = sys.argv[1], int(sys.argv[2])
    from bench.systems.procrastinate import use_connector

    use_connector(app, procrastinate.PsycopgConnector(conninfo=dsn))
    with app.open():
        app.run_worker(queues=["default"], concurrency=concurrency, listen_notify=True)


if __name__ == "__main__":
    main()
