"""PgBouncer for the pooler tests: the throwaway one of ``bench/pgbouncer.py``,
with the suite's policy on a missing binary: under ``CI=true`` the test fails
(CI installs the ``pgbouncer`` package; a missing one is a broken CI), elsewhere
it is skipped with the command that installs it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from bench import pgbouncer
from bench.pgbouncer import Bouncer


def require() -> None:
    if pgbouncer.binary() is not None:
        return
    message = "pgbouncer is not installed: apt-get install -y pgbouncer"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (.ci/run installs it)")
    pytest.skip(message)


@contextlib.contextmanager
def running(server_dsn: str, pool_size: int = 4) -> Iterator[Bouncer]:
    require()
    with pgbouncer.running(server_dsn, pool_size=pool_size) as bouncer:
        yield bouncer
