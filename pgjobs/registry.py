"""Job types: the ``@pgjobs.job`` decorator, the in-process registry, and the
upsert that makes a type data in ``pgjobs.job_types``.

A :class:`Registry` holds the types and handlers one process knows. The default
one sits behind ``@pgjobs.job``; a test or a library builds its own and makes it
current for a block (``with registry.active():``), or hands it to the worker and
``pgjobs.testing``.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg import ConnectionInfo

from pgjobs import _conn, limits
from pgjobs.errors import InvalidJob, translated
from pgjobs.statements import job_types as statements
from pgjobs.steps import Steps, drive

F = TypeVar("F", bound=Callable[..., Any])
logger = structlog.get_logger("pgjobs.registry")

# Who may cancel a job: any member of its organization, or only its creator
# (and pgjobs_admin). Enforced by pgjobs.cancel in the database.
CANCEL_POLICIES = ("organization", "creator")


@dataclasses.dataclass(frozen=True)
class JobType:
    """A job type's settings; ``None`` never stands in for an explicit 0."""

    name: str
    handler: str
    queue: str = "default"
    priority: int = 2
    max_attempts: int = 5
    timeout_seconds: int = 300
    dedup_window_seconds: int = 0
    dedup_by_payload: bool = False
    rate_limit: int | None = None
    rate_period_seconds: int = 60
    retry_base_seconds: float = 1.0
    retry_cap_seconds: float = 3600.0
    enabled: bool = True
    cancel_policy: str = "organization"  # or "creator": only who created a job cancels it
    # A system schedule declared with the handler (pgjobs/schedules/declare.py).
    schedule: str | None = None
    schedule_timezone: str = "UTC"

    def validate(self) -> None:
        if not self.name:
            raise InvalidJob("job type name must not be empty")
        limits.check_name("job type", self.name)
        limits.check_name("queue", self.queue)
        limits.check_int("priority", self.priority, 0, 3)
        limits.check_int("max_attempts", self.max_attempts, 1, limits.MAX_ATTEMPTS)
        limits.check_int("timeout", self.timeout_seconds, 0, limits.MAX_TIMEOUT_SECONDS)
        if self.dedup_window_seconds < 0:
            raise InvalidJob("dedup_window must be >= 0 seconds")
        if self.rate_limit is not None and self.rate_limit < 0:
            raise InvalidJob("rate_limit must be >= 0")
        if self.rate_period_seconds <= 0:
            raise InvalidJob("rate_period must be > 0 seconds")
        if self.retry_base_seconds < 0 or self.retry_cap_seconds < 0:
            raise InvalidJob("retry_base and retry_cap must be >= 0")
        if self.cancel_policy not in CANCEL_POLICIES:
            raise InvalidJob(f"cancel_policy must be one of {', '.join(CANCEL_POLICIES)}")
        if self.schedule is not None:
            from pgjobs.schedules.cron import check

            check(self.schedule, self.schedule_timezone)


def handler_path(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def resolve_handler(path: str) -> Callable[..., Any]:
    """Imports ``package.module:function``; a path that does not import is InvalidJob."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr or "<" in attr:
        raise InvalidJob(f"handler {path!r} is not an importable 'package.module:function'")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise InvalidJob(f"handler {path!r} cannot be imported: {exc}") from exc
    if not callable(target):
        raise InvalidJob(f"handler {path!r} is not callable")
    # A decorated handler resolves to its wrapper's original function.
    handler: Callable[..., Any] = getattr(target, "__pgjobs_handler__", target)
    return handler


def upsert(conn: psycopg.Connection[Any], spec: JobType) -> None:
    """Writes one job type (create or update) on the caller's connection."""
    spec.validate()
    resolve_handler(spec.handler)
    with translated():
        before = statements.upsert(_conn.raw(conn), spec)
    if before is not None:
        _log_changes(spec, before)
    if spec.schedule is not None:
        from pgjobs.schedules.declare import declare

        declare(_conn.raw(conn), spec.name, spec.schedule, spec.schedule_timezone)


# The settings whose change by a registration is worth an operator's notice:
# where a type's jobs go, what runs them, how often and for how long.
_WATCHED = ("queue", "handler", "max_attempts", "timeout_seconds")


def _log_changes(spec: JobType, before: dict[str, Any]) -> None:
    """Logs a registration that changed an existing type's watched settings."""
    changed = {k: (before[k], getattr(spec, k)) for k in _WATCHED if before[k] != getattr(spec, k)}
    if changed:
        logger.warning(
            "job_type_changed",
            job_type=spec.name,
            **{f"old_{k}": old for k, (old, _) in changed.items()},
            **{f"new_{k}": new for k, (_, new) in changed.items()},
        )


def _database_key(info: ConnectionInfo) -> str:
    return f"{info.user}@{info.host}:{info.port}/{info.dbname}"


class Registry:
    """The job types and handlers of one process (or one test)."""

    def __init__(self) -> None:
        # Registration happens at import time, possibly from several threads.
        self._lock = threading.Lock()
        self._types: dict[str, JobType] = {}
        self._handlers: dict[str, Callable[..., Any]] = {}
        # (database, type) pairs already written, so enqueue pays the upsert once.
        self._synced: set[tuple[str, str]] = set()
        self._start_hooks: list[Callable[[], Any]] = []

    def on_worker_start(self, fn: F) -> F:
        """Runs ``fn()`` (a coroutine function or a plain one) once in every
        worker process as it starts, on the event loop its async handlers run
        on: the place to make process-wide async resources (an HTTP client, a
        connection pool) that every job of the process then shares."""
        if not callable(fn):
            raise InvalidJob("on_worker_start takes a function")
        with self._lock:
            self._start_hooks.append(fn)
        return fn

    def start_hooks(self) -> list[Callable[[], Any]]:
        with self._lock:
            return list(self._start_hooks)

    def job(
        self,
        name: str,
        *,
        queue: str = "default",
        priority: int = 2,
        max_attempts: int = 5,
        timeout: float = 300,
        dedup_window: float = 0,
        dedup_by_payload: bool = False,
        rate_limit: int | None = None,
        rate_period: float = 60,
        retry_base: float = 1.0,
        retry_cap: float = 3600.0,
        enabled: bool = True,
        cancel_policy: str = "organization",
        schedule: str | None = None,
        timezone: str = "UTC",
    ) -> Callable[[F], F]:
        """Registers ``fn`` as the handler of job type ``name``.

        The type reaches the database on the first enqueue of it from this process
        (while this registry is current), on worker start, or through :meth:`sync`.
        ``schedule`` (a cron expression, read in ``timezone``) declares a system
        schedule of the same name, written whenever the type is.
        """

        def register(fn: F) -> F:
            spec = JobType(
                name=name,
                handler=handler_path(fn),
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
                timeout_seconds=int(timeout),
                dedup_window_seconds=int(dedup_window),
                dedup_by_payload=dedup_by_payload,
                rate_limit=rate_limit,
                rate_period_seconds=int(rate_period),
                retry_base_seconds=float(retry_base),
                retry_cap_seconds=float(retry_cap),
                enabled=enabled,
                cancel_policy=cancel_policy,
                schedule=schedule,
                schedule_timezone=timezone,
            )
            if "<" in fn.__qualname__:
                raise InvalidJob(f"handler {spec.handler!r} must be a module-level function")
            fn.__pgjobs_handler__ = fn  # type: ignore[attr-defined]
            spec.validate()
            with self._lock:
                self._types[name] = spec
                self._handlers[name] = fn
                self._synced.clear()
            return fn

        return register

    def registered(self) -> dict[str, JobType]:
        with self._lock:
            return dict(self._types)

    def handler(self, name: str) -> Callable[..., Any] | None:
        """The function registered for ``name`` in this process, if any."""
        with self._lock:
            return self._handlers.get(name)

    def sync(self, conn: psycopg.Connection[Any]) -> list[str]:
        """Upserts every registered type; returns their names."""
        raw = _conn.raw(conn)
        names = []
        for spec in self.registered().values():
            upsert(raw, spec)
            names.append(spec.name)
        if raw.autocommit:  # otherwise ensure() caches each type once it sees it committed
            with self._lock:
                self._synced.update((_database_key(raw.info), name) for name in names)
        return names

    def ensure(self, conn: psycopg.Connection[Any], name: str) -> None:
        """Makes a registered type exist in the database before enqueueing it."""
        drive(conn, self.ensure_steps(conn.info, name))

    def ensure_steps(self, info: ConnectionInfo, name: str) -> Steps[None]:
        """:meth:`ensure` as steps (``pgjobs.steps``), for both faces of enqueue."""
        with self._lock:
            spec = self._types.get(name)
            key = (_database_key(info), name)
            if spec is None or key in self._synced:
                return
        resolve_handler(spec.handler)
        with translated():
            if not (yield statements.may_write.bind()):
                # An application role reads job types but does not define them:
                # the workers (or migrations) do. Enqueue then checks the type exists.
                self._remember(key)
                return
            uncommitted = yield statements.ensure.bind(spec)
        # A row this transaction wrote may yet be rolled back: cache it only once committed.
        if not uncommitted:
            self._remember(key)

    def forget_synced(self) -> None:
        """Makes the next enqueue of each type write it again (after a rollback lost it)."""
        with self._lock:
            self._synced.clear()

    def _remember(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._synced.add(key)

    @contextlib.contextmanager
    def active(self) -> Iterator[Registry]:
        """Makes this registry the one ``pgjobs.enqueue`` consults, for the block."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)


default = Registry()
_current: contextvars.ContextVar[Registry] = contextvars.ContextVar(
    "pgjobs_registry", default=default
)


def current() -> Registry:
    """The registry in effect: the default one unless a block made another current."""
    return _current.get()


job = default.job
on_worker_start = default.on_worker_start


# The current registry's verbs, for callers that hold no registry of their own.
def registered() -> dict[str, JobType]:
    return current().registered()


def sync(conn: psycopg.Connection[Any]) -> list[str]:
    return current().sync(conn)


def forget_synced() -> None:
    current().forget_synced()
