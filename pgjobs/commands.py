"""What each CLI command does, as plain functions (tested without click)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg

from pgjobs import db, diagnose, jobs, startup
from pgjobs import migrate as migrate_mod
from pgjobs.enqueue import enqueue as add_job
from pgjobs.errors import InvalidJob
from pgjobs.output import json_default, print_rows
from pgjobs.payload import decode_cli
from pgjobs.records import Job
from pgjobs.tenancy import set_actor, set_organization
from pgjobs.terminal import printable

Echo = Callable[[Any], None]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str) -> float:
    """'90' or '90s', '5m', '2h', '30d' -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise InvalidJob(f"not a duration: {text!r} (use e.g. 30s, 5m, 2h, 30d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@contextlib.contextmanager
def connection(
    dsn: str | None, organization: str | None = None, actor: str | None = None
) -> Iterator[psycopg.Connection]:
    """One transaction on the resolved server, scoped to ``organization`` and
    acting as ``actor`` (pgjobs.actor) if given."""
    with _connect(dsn) as conn, conn.transaction():
        if organization is not None:
            set_organization(conn, organization)
        if actor is not None:
            set_actor(conn, actor)
        yield conn


def _connect(dsn: str | None, **kwargs: Any) -> psycopg.Connection[Any]:
    # A command runs a few statements and exits: preparing them gains nothing,
    # and nothing prepared is what a transaction-mode pooler (PgBouncer) needs.
    return psycopg.connect(db.resolve_dsn(dsn), prepare_threshold=None, **kwargs)


def migrate(dsn: str | None, echo: Echo) -> int:
    with _connect(dsn, autocommit=True) as conn:
        applied = migrate_mod.migrate(conn)
    echo(f"applied: {', '.join(applied)}" if applied else "up to date")
    return 0


def worker(
    dsn: str | None,
    *,
    queues: str,
    imports: Sequence[str],
    wait_for_database: float | None = None,
    **settings: Any,
) -> int:
    from pgjobs.worker.config import WorkerConfig
    from pgjobs.worker.supervisor import run

    log_level = settings.pop("log_level", "info")
    poll_seconds = settings.pop("poll_seconds", None)
    if poll_seconds is not None:  # --poll applies whether pooled or not
        settings.update(poll_seconds=poll_seconds, pooler_poll_seconds=poll_seconds)
    prune_after = settings.pop("prune_after", None)
    if prune_after is not None:
        settings["prune_after_seconds"] = parse_duration(prune_after)
    resolved = db.resolve_dsn(dsn)
    served = tuple(q.strip() for q in queues.split(",") if q.strip())
    startup.import_modules(imports)
    if wait_for_database is None and settings.get("exit_when_idle"):
        wait_for_database = WAIT_WHEN_EXITING_IDLE
    diagnose.wait_for_database(resolved, timeout=wait_for_database)
    startup.check_worker(resolved, served, imports)
    cfg = WorkerConfig(dsn=resolved, queues=served, imports=tuple(imports), **settings)
    return run(cfg, log_level=log_level)


# How long `worker --exit-when-idle` waits for an unreachable database before
# giving up: a batch run or a test must end, not retry for ever.
WAIT_WHEN_EXITING_IDLE = 30.0


def register(dsn: str | None, imports: Sequence[str], echo: Echo) -> int:
    return startup.register(db.resolve_dsn(dsn), imports, echo)


def enqueue(
    dsn: str | None,
    job_type: str,
    payload: str,
    echo: Echo,
    *,
    delay: str | None,
    depends_on: Sequence[int],
    **options: Any,
) -> int:
    body = decode_cli(payload)
    actor = options.pop("actor", None)
    # --org names the job's organization and scopes the session to it, so an
    # application role (pgjobs_app) may enqueue with it.
    with connection(dsn, options.get("organization"), actor) as conn:
        result = add_job(
            conn,
            job_type,
            body,
            delay=None if delay is None else parse_duration(delay),
            depends_on=tuple(depends_on),
            **options,
        )
    echo({"id": result.id, "duplicate": result.duplicate})
    return 0


def status(dsn: str | None, job_id: int, echo: Echo, *, organization: str | None) -> int:
    with connection(dsn, organization) as conn:
        echo(jobs.get(conn, job_id).as_dict())
    return 0


def list_jobs(
    dsn: str | None, echo: Echo, *, as_json: bool, organization: str | None, **filters: Any
) -> int:
    with connection(dsn, organization) as conn:
        rows = _listed(jobs.list_jobs(conn, organization=organization, **filters))
    columns = ["id", "job_type", "organization", "queue", "state", "attempt", "created_at"]
    print_rows(echo, rows, columns, as_json)
    return 0


def history(
    dsn: str | None, job_id: int, echo: Echo, *, organization: str | None, as_json: bool
) -> int:
    with connection(dsn, organization) as conn:
        jobs.get(conn, job_id)  # not found / not visible -> exit 1
        rows = [event.as_dict() for event in jobs.history(conn, job_id)]
    columns = [
        "at",
        "attempt",
        "from_state",
        "to_state",
        "worker",
        "error_class",
        "duration_ms",
        "message",
    ]
    print_rows(echo, rows, columns, as_json)
    if not as_json:
        for row in rows:
            if row.get("traceback"):
                trace = printable(row["traceback"], keep_lines=True)
                echo(f"\n-- attempt {row['attempt']} traceback --\n{trace}")
    return 0


def cancel(
    dsn: str | None,
    job_id: int,
    echo: Echo,
    *,
    organization: str | None,
    actor: str | None = None,
) -> int:
    with connection(dsn, organization, actor) as conn:
        state = jobs.cancel(conn, job_id)
    echo(state)
    return 0


def retry(dsn: str | None, job_id: int, echo: Echo, *, organization: str | None) -> int:
    with connection(dsn, organization) as conn:
        state = jobs.retry(conn, job_id)
    echo(state)
    return 0


def demo(dsn: str | None, echo: Echo, *, count: int, processes: int) -> int:
    from pgjobs import demo as demo_mod

    return demo_mod.run(db.resolve_dsn(dsn), echo, count=count, processes=processes)


# What `list --json` prints of each job: the summary it always printed, not the
# payload, checkpoint and result the Job record also holds.
_LISTED = (
    "id",
    "job_type",
    "organization",
    "queue",
    "priority",
    "state",
    "attempt",
    "max_attempts",
    "run_at",
    "progress",
    "created_at",
    "started_at",
    "finished_at",
    "last_error",
)


def _listed(found: Sequence[Job]) -> list[dict[str, Any]]:
    return [{column: job[column] for column in _LISTED} for job in found]


def metrics(dsn: str | None, echo: Echo, *, fmt: str, organization: str | None) -> int:
    from pgjobs import monitoring as metrics_mod

    with connection(dsn, organization) as conn:
        data = metrics_mod.metrics(conn)
    if fmt == "json":
        echo(json.dumps(data, default=json_default, ensure_ascii=False))
    elif fmt == "prometheus":
        echo(metrics_mod.prometheus_text(data).rstrip("\n"))
    else:
        print_rows(
            echo,
            data["queue_depth"],
            [
                "queue",
                "priority",
                "queued",
                "scheduled",
                "running",
                "retrying",
                "waiting",
                "oldest_queued_seconds",
            ],
            False,
        )
        echo("")
        print_rows(
            echo,
            data["processing_times"],
            ["job_type", "attempts", "avg_ms", "p50_ms", "p95_ms"],
            False,
        )
        echo("")
        print_rows(
            echo,
            data["failure_rates"],
            ["job_type", "attempts", "failures", "timeouts", "dead", "rate"],
            False,
        )
        echo("")
        if data["unserved_job_types"]:  # their jobs wait for a worker with the handler
            echo("job types no live worker can run:")
            print_rows(echo, data["unserved_job_types"], ["job_type", "runnable_jobs"], False)
            echo("")
        health = {**(data["workers"] or {}), **(data["postgres"] or {})}
        echo("  ".join(f"{k}={v}" for k, v in health.items()))
    return 0


def dead_letter(
    dsn: str | None,
    echo: Echo,
    *,
    organization: str | None,
    job_type: str | None,
    limit: int,
    as_json: bool,
) -> int:
    with connection(dsn, organization) as conn:
        rows = _listed(
            jobs.list_jobs(
                conn, organization=organization, state="dead", job_type=job_type, limit=limit
            )
        )
    print_rows(
        echo,
        rows,
        ["id", "job_type", "organization", "attempt", "finished_at", "last_error"],
        as_json,
    )
    return 0


def retry_all_dead(
    dsn: str | None, echo: Echo, *, organization: str | None, job_type: str | None
) -> int:
    count = 0
    with connection(dsn, organization) as conn:
        after: int | None = None
        while True:
            rows = jobs.list_jobs(
                conn,
                organization=organization,
                state="dead",
                job_type=job_type,
                limit=1000,
                after_id=after,
            )
            for row in rows:
                jobs.retry(conn, row["id"])
                count += 1
            if len(rows) < 1000:
                break
            after = rows[-1]["id"]
    echo(f"requeued {count} dead jobs")
    return 0


def listen(
    dsn: str | None,
    echo: Echo,
    *,
    organization: str | None,
    job_id: int | None,
    timeout: float | None,
) -> int:
    from pgjobs.notify import subscribe

    resolved = db.resolve_dsn(dsn)
    # LISTEN works on any database, so without this check an unmigrated one
    # would print nothing, for ever, and exit 0.
    with psycopg.connect(resolved) as conn:
        diagnose.require_schema(conn, resolved)
    for event in subscribe(resolved, organization=organization, job_id=job_id, timeout=timeout):
        echo(json.dumps(event, ensure_ascii=False))
    return 0


def watch(
    dsn: str | None, job_id: int, echo: Echo, *, organization: str | None, interval: float = 0.5
) -> int:
    """A progress line until the job ends: 0 completed, 1 dead or canceled."""
    import time

    from pgjobs.states import TERMINAL, State

    resolved = db.resolve_dsn(dsn)
    last = ""
    while True:
        with connection(resolved, organization) as conn:
            job = jobs.get(conn, job_id)
        pct = float(job["progress"] or 0)
        if job["state"] == State.COMPLETED:
            pct = 100.0
        bar = "#" * int(pct / 5) + "-" * (20 - int(pct / 5))
        line = (
            f"[{bar}] {pct:5.1f}%  {job['state']:<9} attempt {job['attempt']}"
            f"/{job['max_attempts']}  {printable(job['progress_message'] or '')}"
        )
        if line != last:
            echo(line)
            last = line
        if job["state"] in TERMINAL:
            if job["last_error"] and job["state"] != State.COMPLETED:
                echo(f"error: {printable(job['last_error'])}")
            return 0 if job["state"] == State.COMPLETED else 1
        time.sleep(interval)


def prune(dsn: str | None, echo: Echo, *, older_than: str, batch_size: int) -> int:
    from pgjobs.retention import prune as prune_jobs

    seconds = parse_duration(older_than)
    with _connect(dsn) as conn:
        total = prune_jobs(
            conn, seconds, batch_size=batch_size, progress=lambda n: echo(f"pruned {n} jobs")
        )
    echo(f"done: pruned {total} jobs finished more than {older_than} ago")
    return 0


def dashboard(dsn: str | None, echo: Echo, *, host: str, port: int, allow_actions: bool) -> int:
    """Serves the operator dashboard (every organization, pgjobs_admin rights)."""
    try:
        import uvicorn

        from pgjobs.web import create_app
    except ImportError as exc:
        raise InvalidJob(f"the dashboard needs: pip install 'pgjobs[web]' ({exc})") from exc
    app = create_app(db.resolve_dsn(dsn), allow_actions=allow_actions)
    mode = "actions allowed" if allow_actions else "read-only"
    echo(f"pgjobs dashboard on http://{host}:{port}/ ({mode})")
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
