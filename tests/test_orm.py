"""ORM transactions are first-class: pgjobs' calls take a SQLAlchemy
``Connection`` or ``Session`` and Django's connection, and run in the ORM's own
transaction, whichever statement comes first. Both ORMs begin lazily, so
``pgjobs.tenant()`` is often the transaction's first statement: a rollback must
still take the job with it.

Real SQLAlchemy 2 (psycopg driver) and Django (psycopg 3 backend, settings made
here), connecting as pgjobs_app and pgjobs_admin logins."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import orm

import pgjobs
from pgjobs.errors import InvalidJob
from tests.support.clients import (
    JOB_TYPE,
    Logins,
    database,
    jobs_with,
    logins,
    notes_with,
    prepare,
)

ORG = "org-A"


class Base(orm.DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    body: orm.Mapped[str]


class Undo(Exception):
    """Raised to roll an ORM transaction back."""


@pytest.fixture(scope="module")
def who(server_dsn: str, template_db: str) -> Iterator[Logins]:
    with logins(server_dsn, "orm") as made:
        yield made


@pytest.fixture(scope="module")
def orm_dsn(server_dsn: str, template_db: str, who: Logins) -> Iterator[str]:
    with database(server_dsn, template_db, "orm") as dsn:
        prepare(dsn, who)
        yield dsn


# -- the three ways in ------------------------------------------------------------


@pytest.fixture(scope="module")
def engines(orm_dsn: str, who: Logins) -> Iterator[dict[str, sa.Engine]]:
    params = psycopg.conninfo.conninfo_to_dict(orm_dsn)
    made = {
        user: sa.create_engine(
            sa.URL.create(
                "postgresql+psycopg",
                username=role,
                host=str(params.get("host") or "") or None,
                port=int(params["port"]) if params.get("port") else None,
                database=str(params["dbname"]),
            ),
            poolclass=sa.pool.NullPool,
        )
        for user, role in (("app", who.app), ("admin", who.admin))
    }
    yield made
    for engine in made.values():
        engine.dispose()


@pytest.fixture(scope="module")
def django_db(orm_dsn: str, who: Logins) -> Iterator[Any]:
    """Django configured for this module's database: ``default`` as the app
    login, ``admin`` as the admin login."""
    import django
    from django.conf import settings
    from django.db import connections

    params = psycopg.conninfo.conninfo_to_dict(orm_dsn)

    def alias(user: str) -> dict[str, Any]:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": params["dbname"],
            "USER": user,
            "HOST": params.get("host", ""),
            "PORT": params.get("port", ""),
        }

    assert not settings.configured, "another test configured Django first"
    settings.configure(
        DATABASES={"default": alias(who.app), "admin": alias(who.admin)},
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()
    yield connections
    connections.close_all()


def run_sqlalchemy_session(engine: sa.Engine, steps: Callable[[Any], None], end: str) -> None:
    with orm.Session(engine) as session:
        steps(session)
        getattr(session, end)()


def run_sqlalchemy_connection(engine: sa.Engine, steps: Callable[[Any], None], end: str) -> None:
    with engine.connect() as conn:
        steps(conn)
        getattr(conn, end)()


def run_django(alias: str, steps: Callable[[Any], None], end: str) -> None:
    from django.db import connection, connections, transaction

    # django.db.connection (a proxy) for the default alias, as applications write it.
    conn = connection if alias == "default" else connections[alias]
    try:
        with transaction.atomic(using=alias):
            steps(conn)
            if end == "rollback":
                raise Undo
    except Undo:
        pass


def orm_write(conn: Any, marker: str) -> None:
    """The application's own write, through the ORM."""
    if isinstance(conn, orm.Session):
        conn.add(Note(body=marker))
        conn.flush()
    elif isinstance(conn, sa.Connection):
        conn.execute(sa.insert(Note.__table__).values(body=marker))
    else:
        with conn.cursor() as cur:
            cur.execute("insert into notes (body) values (%s)", [marker])


def perform(conn: Any, order: tuple[str, ...], marker: str, org: str | None) -> None:
    """The steps in order; a tenant block encloses the steps after it."""
    if not order:
        return
    step, rest = order[0], order[1:]
    if step == "tenant":
        with pgjobs.tenant(conn, ORG) as scoped:
            assert scoped is conn
            perform(conn, rest, marker, org)
        return
    if step == "enqueue":
        pgjobs.enqueue(conn, JOB_TYPE, {"marker": marker}, organization=org)
    elif step == "enqueue_many":
        pgjobs.enqueue_many(conn, [{"job_type": JOB_TYPE, "payload": {"marker": marker},
                                    "organization": org}] * 2)  # fmt: skip
    elif step == "write":
        orm_write(conn, marker)
    perform(conn, rest, marker, org)


# The app login must scope before it enqueues; the admin login may enqueue any
# organization's job unscoped, so it shows the enqueue-first orders.
ORDERS = {
    "tenant first": ("app", ("tenant", "enqueue", "write")),
    "tenant first, bulk last": ("app", ("tenant", "write", "enqueue_many")),
    "orm write first": ("app", ("write", "tenant", "enqueue")),
    # Nothing through the ORM: pgjobs' statements alone must count as begun.
    "tenant and enqueue only": ("app", ("tenant", "enqueue")),
    "enqueue first": ("admin", ("enqueue", "write")),
    "bulk enqueue first": ("admin", ("enqueue_many", "write")),
    "enqueue only": ("admin", ("enqueue",)),
}
FAMILIES = ("sqlalchemy session", "sqlalchemy connection", "django")


@pytest.mark.parametrize("end", ["rollback", "commit"])
@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("family", FAMILIES)
def test_the_orm_transaction_decides_whether_the_job_exists(
    orm_dsn: str, engines: dict[str, sa.Engine], django_db: Any, family: str, order: str, end: str
) -> None:
    user, steps = ORDERS[order]
    marker = f"{family}/{order}/{end}"
    org = None if user == "app" else ORG

    def body(conn: Any) -> None:
        perform(conn, steps, marker, org)

    if family == "sqlalchemy session":
        run_sqlalchemy_session(engines[user], body, end)
    elif family == "sqlalchemy connection":
        run_sqlalchemy_connection(engines[user], body, end)
    else:
        run_django("default" if user == "app" else "admin", body, end)
    jobs = 2 if "enqueue_many" in steps else 1
    notes = 1 if "write" in steps else 0
    kept = end == "commit"
    assert (jobs_with(orm_dsn, marker), notes_with(orm_dsn, marker)) == (
        (jobs, notes) if kept else (0, 0)
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_every_public_call_takes_the_orms_connection(
    engines: dict[str, sa.Engine], django_db: Any, family: str
) -> None:
    """Reads come back with the same types as on psycopg (Django's own
    connection loads jsonb as text: pgjobs' cursors do not)."""
    payload = {"marker": f"calls/{family}", "n": 1, "nested": {"ok": True}}

    def body(conn: Any) -> None:
        with pgjobs.tenant(conn, ORG):
            job = pgjobs.enqueue(conn, JOB_TYPE, payload)
            got = pgjobs.get(conn, job.id)
            assert got["payload"] == payload
            assert got["organization"] == ORG
            assert [j["id"] for j in pgjobs.list_jobs(conn, job_type=JOB_TYPE)][:1] == [job.id]
            assert pgjobs.cancel(conn, job.id) == "canceled"
            assert pgjobs.retry(conn, job.id) == "queued"
            assert [e for e in pgjobs.history(conn, job.id)]
            assert any(r["organization"] == ORG for r in pgjobs.metrics(conn)["job_counts"])

    if family == "sqlalchemy session":
        run_sqlalchemy_session(engines["app"], body, "rollback")
    elif family == "sqlalchemy connection":
        run_sqlalchemy_connection(engines["app"], body, "rollback")
    else:
        run_django("default", body, "rollback")


def test_a_session_without_autobegin_is_not_begun_for_it(
    orm_dsn: str, engines: dict[str, sa.Engine]
) -> None:
    """The application turned autobegin off: pgjobs does not begin for it."""
    with orm.Session(engines["admin"], autobegin=False) as session:
        with pytest.raises(sa.exc.InvalidRequestError, match=r"[Aa]utobegin"):
            pgjobs.enqueue(session, JOB_TYPE, {"marker": "no-autobegin"}, organization=ORG)
        with session.begin():
            pgjobs.enqueue(session, JOB_TYPE, {"marker": "no-autobegin"}, organization=ORG)
    assert jobs_with(orm_dsn, "no-autobegin") == 1


def test_django_outside_atomic_has_no_transaction_to_scope(orm_dsn: str, django_db: Any) -> None:
    from django.db import connection

    with pytest.raises(InvalidJob, match="atomic"), pgjobs.tenant(connection, ORG):
        pytest.fail("the block ran")
    assert jobs_with(orm_dsn, "django-autocommit") == 0


def test_anything_else_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match="psycopg 3 connection"):
        pgjobs.enqueue(object(), JOB_TYPE)  # type: ignore[arg-type]


def test_import_pgjobs_imports_neither_orm() -> None:
    probe = (
        "import sys, pgjobs; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'django')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
