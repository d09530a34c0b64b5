"""The async lane: one event loop per worker process for ``async def`` handlers.

The loop is made once, on a thread of its own, when the process starts (if
``@pgjobs.on_worker_start`` hooks are registered: they run on it first) or at
its first async job, and it lives as long as the process: a client or pool a
hook creates serves every job of the process. The main thread still claims
and completes (:mod:`runner`, :mod:`completer`); it hands each async job to
the lane, which runs up to ``--concurrency`` of them as tasks and hands each
outcome back.

Every job keeps its guarantees: its slot entry tells the supervisor what runs
(so leases, cancels and timeouts work per job); a watcher cancels a task whose
job was canceled or passed its deadline (the outcome is ``canceled`` or
``timeout``, as for a sync job); a task that ignores its cancellation is
killed with its process by the supervisor after the cancel grace, and its
siblings go back to the queue without losing an attempt.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from pgjobs.context import AsyncJobContext
from pgjobs.statements import Bound, ClaimedJob, Failed, Outcome, arun
from pgjobs.worker import slots as slot_fields
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.executor import check_fit, completed, failure, ms
from pgjobs.worker.session import aconnect
from pgjobs.worker.slots import Slots, now_ms

_WATCH_SECONDS = 0.02  # how soon a cancel or a deadline stops a task
_SWITCH_SECONDS = 0.0005


class Lane:
    def __init__(
        self,
        cfg: WorkerConfig,
        slots: Slots,
        index: int,
        wake: threading.Event,
        worker: str,
        hooks: list[Callable[[], Any]],
    ) -> None:
        self.cfg = cfg
        self.slots = slots
        self.index = index
        self.wake = wake  # set on every outcome: the main thread collects them
        self.worker = worker
        self.hooks = hooks
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="pgjobs-loop", daemon=True
        )
        # Written by the loop thread, emptied by the main thread (deque: thread-safe).
        self.done: collections.deque[tuple[int, ClaimedJob, Outcome]] = collections.deque()
        self.tasks: dict[int, asyncio.Task[None]] = {}  # entry -> task (loop thread only)
        self.stopped: dict[int, str] = {}  # entry -> why its task was cancelled
        self.conn: psycopg.AsyncConnection[Any] | None = None  # the contexts' writes
        self.connecting = asyncio.Lock()

    def start(self) -> None:
        """Starts the loop and runs the start hooks on it (their error fails the process)."""
        # Two busy threads share the GIL from now on: hand it over every 0.5 ms
        # rather than every 5, or a finished task's outcome (and the claim that
        # would refill its entry) waits on the other thread's Python work.
        sys.setswitchinterval(_SWITCH_SECONDS)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()

    async def _start(self) -> None:
        for hook in self.hooks:
            value = hook()
            if inspect.isawaitable(value):
                await value
        self.loop.create_task(self._watch())

    def submit(self, jobs: list[tuple[int, ClaimedJob, Callable[..., Any]]]) -> None:
        """Runs each ``(entry, job, handler)`` as a task (from the main thread;
        returns at once)."""
        self.loop.call_soon_threadsafe(self._spawn, jobs)

    def _spawn(self, jobs: list[tuple[int, ClaimedJob, Callable[..., Any]]]) -> None:
        for entry, job, fn in jobs:
            self.stopped.pop(entry, None)
            self.tasks[entry] = self.loop.create_task(self._run(entry, job, fn))

    async def _run(self, entry: int, job: ClaimedJob, fn: Callable[..., Any]) -> None:
        ctx = AsyncJobContext(
            job,
            self._arun,
            lambda: self.slots.cancel_requested(self.index, job.id),
            worker=self.worker,
        )
        started = time.perf_counter()
        try:
            check_fit(fn, ctx)
            outcome: Outcome = completed(await fn(ctx, **ctx.payload), started)
        except asyncio.CancelledError:
            if entry not in self.stopped:
                raise  # the loop itself is going away
            outcome = self._stopped(entry, job, started)
        except Exception as exc:
            outcome = failure(exc, started)
        if entry in self.stopped:  # it caught its cancellation and carried on
            outcome = self._stopped(entry, job, started)
        del self.tasks[entry]
        self.slots.finish(self.index, entry)
        self.done.append((entry, job, outcome))
        self.wake.set()

    def _stopped(self, entry: int, job: ClaimedJob, started: float) -> Failed:
        if self.stopped[entry] == "timeout":
            return Failed("timeout", "the job exceeded its timeout", None, False, ms(started))
        return Failed("canceled", f"job {job.id} was canceled", None, True, ms(started))

    async def _watch(self) -> None:
        """Cancels the tasks whose job was canceled or passed its deadline."""
        while True:
            await asyncio.sleep(_WATCH_SECONDS)
            now = now_ms()
            for entry, task in list(self.tasks.items()):
                running = self.slots.running(self.index, entry)
                if running is None or entry in self.stopped:
                    continue
                if self.slots.cancel_requested(self.index, running.job_id):
                    self.stopped[entry] = "canceled"
                elif running.deadline_ms and now > running.deadline_ms:
                    self.stopped[entry] = "timeout"
                else:
                    continue
                task.cancel()

    async def _arun(self, stmt: Bound[Any]) -> Any:
        """Runs a context's statement on the lane's session (made on first use,
        made again after a loss; the statement that saw the loss fails)."""
        async with self.connecting:
            if self.conn is None or self.conn.closed or self.conn.broken:
                self.conn = await aconnect(self.cfg, "loop")
                self.slots.put(self.index, slot_fields.PID_LOOP, self.conn.info.backend_pid)
            conn = self.conn
        return await arun(conn, stmt)
