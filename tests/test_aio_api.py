"""pgjobs.aio: the application API awaitable, against real Postgres.

Each test drives its coroutine with ``asyncio.run``; the calls are the same
steps as the blocking API's (pgjobs/steps.py), so these tests hold the asyncio
driver, the async connection adapters and the async-only pieces (tenant,
subscribe, wait) to the blocking API's contract.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import psycopg.sql
import pytest
from hypothesis import HealthCheck, given, settings
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

import pgjobs
from pgjobs.errors import AccessDenied, InvalidJob, JobNotFound, WaitTimeout
from tests import strategies as hostile
from tests.support import async_handlers, queries
from tests.support.databases import RUN_PREFIX
from tests.test_security import as_user

JOB = "aio.steps"  # registered by tests.support.async_handlers


@pytest.fixture(scope="module")
def app_role(server_dsn: str, template_db: str) -> Iterator[str]:
    """A login in pgjobs_app, of this module's own (test_security's roles
    fixture belongs to that module: importing it would make the roles twice)."""
    name = f"{RUN_PREFIX}_aioapp"
    ident = psycopg.sql.Identifier(name)
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("create role {} login in role pgjobs_app").format(ident))
    yield name
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("drop role if exists {}").format(ident))


def _count(dsn: str, sql: str = "select count(*) from pgjobs.jobs") -> int:
    return int(queries.scalar(dsn, sql))


def test_enqueue_in_a_transaction_that_rolls_back_leaves_no_job(dsn: str) -> None:
    async def scenario() -> None:
        async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:
            async with pool.connection() as aconn:
                async with aconn.transaction(force_rollback=True):
                    r = await pgjobs.aio.enqueue(aconn, JOB, {"n": 1}, organization="acme")
                    assert (await pgjobs.aio.get(aconn, r.id)).state == "queued"
                assert not aconn.info.transaction_status  # nothing left open by pgjobs
            async with pool.connection() as aconn:
                with pytest.raises(JobNotFound):
                    await pgjobs.aio.get(aconn, r.id)
                kept = await pgjobs.aio.enqueue(aconn, JOB, {"n": 2}, organization="acme")
            # The pool commits a connection's transaction as it is given back.
            async with pool.connection() as aconn:
                assert (await pgjobs.aio.get(aconn, kept.id)).payload == {"n": 2}

    asyncio.run(scenario())
    assert _count(dsn) == 1


def test_every_call_answers_as_the_blocking_one(dsn: str) -> None:
    async def scenario(aconn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
        many = await pgjobs.aio.enqueue_many(
            aconn, [{"job_type": JOB, "organization": "acme", "dedup_key": "k"}] * 2
        )
        assert [r.duplicate for r in many] == [False, True]
        job_id = many[0].id
        return {
            "get": (await pgjobs.aio.get(aconn, job_id)).as_dict(),
            "list": [j.id for j in await pgjobs.aio.list_jobs(aconn, organization="acme")],
            "cancel": await pgjobs.aio.cancel(aconn, job_id),
            "retry": await pgjobs.aio.retry(aconn, job_id),
            "history": [e.to_state for e in await pgjobs.aio.history(aconn, job_id)],
            "metrics": (await pgjobs.aio.metrics(aconn))["job_counts"],
        }

    async def run() -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            return await scenario(aconn)

    got = asyncio.run(run())
    with psycopg.connect(dsn, autocommit=True) as conn:
        job_id = got["list"][0]
        assert got["get"]["id"] == job_id and got["cancel"] == "canceled"
        assert got["retry"] == "queued"
        assert got["history"] == [e.to_state for e in pgjobs.history(conn, job_id)]
        assert got["list"] == [j.id for j in pgjobs.list_jobs(conn, organization="acme")]
        assert got["metrics"] == pgjobs.metrics(conn)["job_counts"]
        with pytest.raises(JobNotFound):
            pgjobs.get(conn, 10**12)

    async def missing() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            with pytest.raises(JobNotFound):
                await pgjobs.aio.get(aconn, 10**12)
            with pytest.raises(InvalidJob):
                await pgjobs.aio.get(aconn, -1)

    asyncio.run(missing())


def test_blocking_connections_are_refused_with_a_pointer_to_the_right_face(dsn: str) -> None:
    with psycopg.connect(dsn) as conn, pytest.raises(TypeError, match=r"not pgjobs\.aio"):
        asyncio.run(pgjobs.aio.get(conn, 1))

    async def wrong_way() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as aconn:
            with pytest.raises(TypeError, match=r"use pgjobs\.aio"):
                pgjobs.get(aconn, 1)

    asyncio.run(wrong_way())


def test_tenant_joins_the_callers_transaction_and_restores_the_previous_scope(
    dsn: str, app_role: str
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        acme = pgjobs.enqueue(conn, JOB, organization="acme").id
        pgjobs.enqueue(conn, JOB, organization="other")

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(as_user(dsn, app_role)) as aconn:
            async with pgjobs.aio.tenant(aconn, "outer"):
                async with pgjobs.aio.tenant(aconn, "acme"):
                    assert [j.id for j in await pgjobs.aio.list_jobs(aconn)] == [acme]
                scope = await aconn.execute("select current_setting('pgjobs.organization')")
                assert (await scope.fetchone()) == ("outer",)
            assert aconn.info.transaction_status == TransactionStatus.INTRANS  # not committed
            await aconn.rollback()
            with pytest.raises(InvalidJob, match="autocommit"):
                await aconn.set_autocommit(True)
                async with pgjobs.aio.tenant(aconn, "acme"):
                    pass

    asyncio.run(scenario())


def test_sqlalchemy_async_session_joins_its_transaction(dsn: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    url = "postgresql+psycopg://" + dsn.split("://", 1)[1] if "://" in dsn else None
    if url is None:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        url = (
            f"postgresql+psycopg://{params.get('user', 'postgres')}@{params.get('host')}:"
            f"{params.get('port', 5432)}/{params['dbname']}"
        )

    async def scenario() -> tuple[int, int]:
        engine = create_async_engine(url)
        try:
            async with AsyncSession(engine) as session:
                gone = await pgjobs.aio.enqueue(session, JOB, organization="acme")
                await session.rollback()
            async with AsyncSession(engine) as session:
                kept = await pgjobs.aio.enqueue(session, JOB, organization="acme")
                await session.execute(text("select 1"))
                await session.commit()
            return gone.id, kept.id
        finally:
            await engine.dispose()

    gone, kept = asyncio.run(scenario())
    with psycopg.connect(dsn) as conn:
        with pytest.raises(JobNotFound):
            pgjobs.get(conn, gone)
        assert pgjobs.get(conn, kept).state == "queued"


# -- the error contract on hostile input, both faces from one strategy module --

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def contract_dsn(server_dsn: str, template_db: str, app_role: str) -> Iterator[str]:
    from tests.support.databases import databases

    with databases.database(server_dsn, "aiocontract", template=template_db) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "insert into pgjobs.job_types (name, handler) "
                "values (%s, 'tests.support.async_handlers:steps')",
                (hostile.JOB_TYPE,),
            )
            pgjobs.enqueue(conn, hostile.JOB_TYPE, organization=hostile.ORG)
        yield as_user(dsn, app_role)


def _blocking(dsn: str, call: Callable[[Any], Any]) -> tuple[str, int, int]:
    with psycopg.connect(dsn) as conn, conn.transaction(force_rollback=True):
        conn.execute("select set_config('pgjobs.organization', %s, true)", (hostile.ORG,))
        return _outcome(conn, lambda: call(conn), lambda: _jobs(conn))


def _jobs(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select count(*) from pgjobs.jobs").fetchone()
    return int(row[0]) if row else -1


async def _async(dsn: str, call: Callable[[Any], Any]) -> tuple[str, int, int]:
    aconn = await psycopg.AsyncConnection.connect(dsn)
    async with aconn, aconn.transaction(force_rollback=True):
        await aconn.execute("select set_config('pgjobs.organization', %s, true)", (hostile.ORG,))

        async def count() -> int:
            row = await (await aconn.execute("select count(*) from pgjobs.jobs")).fetchone()
            return int(row[0]) if row else -1

        before = await count()
        try:
            await call(aconn)
            outcome = "ok"
        except (InvalidJob, AccessDenied) as exc:
            outcome = type(exc).__name__
        if aconn.info.transaction_status == TransactionStatus.INERROR:
            return outcome, before, before  # the failed statement was undone whole
        return outcome, before, await count()


def _outcome(
    conn: psycopg.Connection[Any], call: Callable[[], Any], count: Callable[[], int]
) -> tuple[str, int, int]:
    before = count()
    try:
        call()
        outcome = "ok"
    except (InvalidJob, AccessDenied) as exc:
        outcome = type(exc).__name__
    if conn.info.transaction_status == TransactionStatus.INERROR:
        return outcome, before, before
    return outcome, before, count()


@SETTINGS
@given(job_type=hostile.JOB_TYPES, payload=hostile.PAYLOADS, options=hostile.OPTIONS)
def test_enqueue_refuses_hostile_input_alike_on_both_faces_and_writes_nothing(
    contract_dsn: str, job_type: Any, payload: Any, options: dict[str, Any]
) -> None:
    sync = _blocking(contract_dsn, lambda c: pgjobs.enqueue(c, job_type, payload, **options))
    aio = asyncio.run(
        _async(contract_dsn, lambda c: pgjobs.aio.enqueue(c, job_type, payload, **options))
    )
    for outcome, before, after in (sync, aio):
        assert after == before + (1 if outcome == "ok" else 0) or (
            outcome == "ok" and after == before  # a duplicate of the existing job
        )
    assert sync[0] == aio[0], (sync, aio)


@SETTINGS
@given(job_type=hostile.JOB_TYPES, payload=hostile.PAYLOADS, options=hostile.OPTIONS)
def test_enqueue_many_refuses_hostile_input_alike_on_both_faces(
    contract_dsn: str, job_type: Any, payload: Any, options: dict[str, Any]
) -> None:
    jobs = [{"job_type": hostile.JOB_TYPE}, {"job_type": job_type, "payload": payload, **options}]
    sync = _blocking(contract_dsn, lambda c: pgjobs.enqueue_many(c, jobs))
    aio = asyncio.run(_async(contract_dsn, lambda c: pgjobs.aio.enqueue_many(c, jobs)))
    for outcome, before, after in (sync, aio):
        if outcome != "ok":
            assert after == before
    assert sync[0] == aio[0], (sync, aio)


# -- subscribe and wait ----------------------------------------------------------


def _subscribers(dsn: str) -> list[int]:
    rows = queries.rows(
        dsn,
        "select pid from pg_stat_activity where application_name = 'pgjobs subscribe'"
        " and datname = current_database()",
    )
    return [row[0] for row in rows]


def test_subscribe_carries_on_across_a_dropped_connection(dsn: str, wait_for: Any) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        job_id = pgjobs.enqueue(conn, JOB, organization="acme").id

    def notify(percent: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "select pg_notify('pgjobs_progress', json_build_object('id', %s::bigint,"
                " 'organization', 'acme', 'progress', %s::int, 'state', 'running')::text)",
                (job_id, percent),
            )

    async def scenario() -> list[Any]:
        seen: list[Any] = []
        events = pgjobs.aio.subscribe(dsn, organization="acme", job_id=job_id, timeout=10)
        first = asyncio.ensure_future(events.__anext__())
        await asyncio.to_thread(wait_for, lambda: len(_subscribers(dsn)) == 1, timeout=10)
        await asyncio.to_thread(notify, 10)
        seen.append((await first)["progress"])
        [old] = _subscribers(dsn)
        queries.scalar(dsn, "select pg_terminate_backend(%s)", (old,))
        nxt = asyncio.ensure_future(events.__anext__())
        # Reconnected: a new session LISTENs, and events flow again.
        await asyncio.to_thread(
            wait_for, lambda: _subscribers(dsn) not in ([], [old]), timeout=10
        )
        await asyncio.to_thread(notify, 20)
        seen.append((await nxt)["progress"])
        await events.aclose()
        return seen

    assert asyncio.run(scenario()) == [10, 20]


def test_wait_returns_the_job_once_finished_and_times_out_clearly(dsn: str) -> None:
    async_handlers.prepare(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        job_id = pgjobs.enqueue(conn, JOB, {"n": 2}, organization="acme").id
        with pytest.raises(WaitTimeout, match="has not finished"):
            pgjobs.wait(conn, job_id, timeout=0.2)

    def finish_soon() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            pgjobs.testing.run_job(conn, job_id)

    async def scenario() -> tuple[Any, Any]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            waiting = asyncio.ensure_future(pgjobs.aio.wait(aconn, job_id, timeout=30))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            threading.Thread(target=finish_soon).start()
            by_conn = await waiting
        by_dsn = await pgjobs.aio.wait(dsn, job_id, timeout=5, organization="acme")
        return by_conn, by_dsn

    by_conn, by_dsn = asyncio.run(scenario())
    assert by_conn.state == "completed" and by_conn.result == {"steps": 2}
    assert by_dsn.as_dict() == by_conn.as_dict()
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert pgjobs.wait(conn, job_id, timeout=1).state == "completed"
        assert pgjobs.wait(dsn, job_id, timeout=1).id == job_id


def test_testing_runs_async_handlers_inline_with_the_awaitable_context(dsn: str) -> None:
    async_handlers.prepare(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        job_id = pgjobs.enqueue(conn, JOB, {"n": 4}, organization="acme").id
        done = pgjobs.testing.run_job(conn, job_id)
        assert done.state == "completed" and done.result == {"steps": 4}
        assert done.checkpoint == {"done": 4} and float(done.progress or 0) == 100
        for n in (1, 2):
            pgjobs.enqueue(conn, JOB, {"n": n}, organization="acme")
        assert pgjobs.testing.drain(conn) == {"completed": 2}
    # The start hooks ran once, on the one loop pgjobs.testing keeps for them.
    assert len(async_handlers.hooks_run) == 1


def test_both_faces_are_made_from_the_same_steps_with_the_same_signature() -> None:
    """No twin code: each pgjobs.aio call wraps the very steps function its
    blocking namesake wraps, so arguments, checks and statements are one."""
    import inspect

    for name in ("enqueue", "enqueue_many", "get", "cancel", "retry", "list_jobs", "history",
                 "metrics"):  # fmt: skip
        sync, aio = getattr(pgjobs, name), getattr(pgjobs.aio, name)
        assert aio.__wrapped__ is sync.__wrapped__, name
        assert inspect.signature(aio) == inspect.signature(sync), name
        assert inspect.iscoroutinefunction(aio) and not inspect.iscoroutinefunction(sync)
        assert aio.__name__ == sync.__name__ == name and aio.__doc__ == sync.__doc__
    assert list(inspect.signature(pgjobs.aio.wait).parameters) == list(
        inspect.signature(pgjobs.wait).parameters
    )
