"""Before a worker (or ``pgjobs register``) starts: the handler modules imported
from the project directory, the job types written, and what is missing said.

``--import myapp.jobs`` looks in the current directory first, as uvicorn and
celery do: a newcomer runs ``pgjobs worker`` from the project, where ``myapp/``
lives, and the console script's own ``sys.path`` does not hold that directory.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import structlog

from pgjobs import diagnose, registry, sql
from pgjobs.diagnose import SetupError

log = structlog.get_logger("pgjobs.startup")

Echo = Callable[[Any], None]


def import_modules(names: Sequence[str]) -> None:
    """Imports each handler module, the current directory searched first."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for name in names:
        if name.endswith(".py") or "/" in name or ":" in name:
            dotted = name.removesuffix(".py").replace("/", ".").partition(":")[0]
            raise SetupError(f"--import takes a module name, not {name!r}: try --import {dotted}")
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing = exc.name or name
            if name == missing or name.startswith(missing + "."):
                raise SetupError(
                    f"cannot import {name!r}: no module {missing!r} in {cwd} or on the "
                    "Python path; run pgjobs from your project's directory or set PYTHONPATH"
                ) from exc
            raise SetupError(
                f"importing {name!r} failed: it imports {missing!r}, which is not installed"
            ) from exc


def register(dsn: str, modules: Sequence[str], echo: Echo) -> int:
    """``pgjobs register``: imports the modules and writes their job types."""
    if not modules:
        raise SetupError("name the modules that define your job types: --import myapp.jobs")
    import_modules(modules)
    types = registry.current()
    if not types.registered():
        raise SetupError(
            f"{', '.join(modules)} registered no job types: decorate handlers with @pgjobs.job"
        )
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
        diagnose.require_schema(conn, dsn)
        names = types.sync(conn)
    for name in sorted(names):
        spec = types.registered()[name]
        echo(f"registered {name} (queue {spec.queue}, handler {spec.handler})")
    return 0


def check_worker(dsn: str, queues: Sequence[str], imports: Sequence[str]) -> None:
    """Warns, before the worker starts, about job types on its queues that it
    has no handler for: their jobs wait for another worker, and the operator
    should see why rather than find them queued later."""
    known = registry.current().registered()
    if not known:
        log.warning(
            "worker_without_handlers",
            hint="pass --import with the modules that define your @pgjobs.job handlers",
        )
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
        rows = conn.execute(sql.query("job_type_names_for_queues"), {"queues": list(queues)})
        missing = sorted(name for (name,) in rows if name not in known)
    if missing:
        log.warning(
            "job_types_without_handler",
            job_types=missing,
            queues=list(queues),
            imports=list(imports),
            hint="their jobs wait for a worker that imports their handlers",
        )
