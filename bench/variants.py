"""A/B runs of checkouts: one measurement run with a checkout's own package."""

from __future__ import annotations

import os
import subprocess
import sys


def run(path: str, script: str, *args: str) -> str:
    """What ``python -c script args`` prints, run from checkout ``path`` with
    that checkout first on PYTHONPATH (its package, its SQL, its workers) and
    this one's ``bench`` after it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((path, os.getcwd()))}
    out = subprocess.run([sys.executable, "-c", script, *args],
                         env=env, cwd=path, check=True, capture_output=True, text=True)
    return out.stdout


def last_line(path: str, script: str, *args: str) -> str:
    """The last line ``run`` printed."""
    return run(path, script, *args).strip().splitlines()[-1]


_INSTALL = "import sys; from bench.systems import ALL; ALL[sys.argv[1]]().install(sys.argv[2])"


def install(path: str, dsn: str, system: str = "pgjobs") -> None:
    """Checkout ``path``'s schema (its sql/, its job types) into ``dsn``."""
    run(path, _INSTALL, system, dsn)
