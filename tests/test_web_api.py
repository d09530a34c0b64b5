"""The JSON API's contract (every endpoint, every error code), read-only mode,
CSRF on the pages' forms, and scoping: a viewer of org-A never gets org-B's
jobs, from any endpoint or page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs.web import create_app
from tests.support import factories
from tests.support.databases import databases
from tests.support.web import Logins, as_user, header_hooks, logins, test_client  # noqa: F401

A = {"x-org": "org-A", "x-user": "alice"}
B = {"x-org": "org-B", "x-user": "bert"}
SECRET_TYPE = "b.secret_type"  # org-B's only job type: it must never show for org-A


@pytest.fixture(scope="module")
def world(server_dsn: str, template_db: str, logins: Logins) -> Iterator[dict[str, Any]]:  # noqa: F811
    with databases.database(server_dsn, template=template_db) as dsn:
        yield _world(dsn, logins)


def _world(dsn: str, logins: Logins) -> dict[str, Any]:  # noqa: F811
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "insert into pgjobs.job_types (name, handler, dedup_window_seconds) values"
            " ('a.type', 'tests.support.handlers:noop', 3600),"
            " (%s, 'tests.support.handlers:noop', 0)",
            (SECRET_TYPE,),
        )
        a = {
            s: factories.make_job(conn, s, job_type="a.type", organization="org-A")
            for s in ("queued", "running", "completed", "dead", "canceled")
        }
        b = {
            s: factories.make_job(conn, s, job_type=SECRET_TYPE, organization="org-B")
            for s in ("queued", "dead")
        }
    return {"dsn": dsn, "app_dsn": as_user(dsn, logins.app), "a": a, "b": b}


@pytest.fixture
def client(world: dict[str, Any]) -> Iterator[Any]:
    app = create_app(world["app_dsn"], allow_actions=True, **header_hooks())
    with test_client(app) as c:
        yield c


def count_jobs(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        got = conn.execute("select count(*) from pgjobs.jobs").fetchone()
    assert got is not None
    return int(got[0])


def fresh_job(dsn: str, state: str, org: str = "org-A") -> int:
    job_type = "a.type" if org == "org-A" else SECRET_TYPE
    with psycopg.connect(dsn) as conn:
        return factories.make_job(conn, state, job_type=job_type, organization=org)


# -- reads ----------------------------------------------------------------------


def test_get_answers_own_jobs_and_404_for_another_organizations(client: Any, world: Any) -> None:
    mine = client.get(f"/api/jobs/{world['a']['queued']}", headers=A)
    assert mine.status_code == 200
    assert mine.json()["id"] == world["a"]["queued"]
    assert mine.json()["organization"] == "org-A"
    theirs = client.get(f"/api/jobs/{world['b']['queued']}", headers=A)
    missing = client.get("/api/jobs/999999999", headers=A)
    # Not yours and not there read the same: nothing confirms B's job exists.
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["type"] == missing.json()["type"] == "not_found"
    assert client.get("/api/jobs/abc", headers=A).status_code == 400
    assert client.get("/api/jobs/0", headers=A).status_code == 400


def test_list_filters_pages_by_keyset_and_shows_only_the_viewers_jobs(
    client: Any, world: Any
) -> None:
    every = client.get("/api/jobs", headers=A).json()
    assert {j["organization"] for j in every["jobs"]} == {"org-A"}
    assert every["next_after_id"] is None
    dead = client.get("/api/jobs", params={"state": "dead"}, headers=A).json()["jobs"]
    assert [j["id"] for j in dead] == [world["a"]["dead"]]
    # Asking for org-B by filter finds nothing: the scope, not the filter, decides.
    other = client.get("/api/jobs", params={"organization": "org-B"}, headers=A).json()
    assert other["jobs"] == []
    first = client.get("/api/jobs", params={"limit": 2}, headers=A).json()
    assert len(first["jobs"]) == 2 and first["next_after_id"] == first["jobs"][-1]["id"]
    rest = client.get(
        "/api/jobs", params={"limit": 100, "after_id": first["next_after_id"]}, headers=A
    ).json()["jobs"]
    ids = [j["id"] for j in first["jobs"] + rest]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    assert set(ids) >= set(world["a"].values())
    since = client.get(
        "/api/jobs", params={"since": "2000-01-01T00:00:00Z", "until": "2999-01-01"}, headers=A
    )
    assert since.status_code == 200 and len(since.json()["jobs"]) == len(ids)
    for bad in (
        {"state": "lost"},
        {"limit": "0"},
        {"limit": "x"},
        {"since": "yesterday"},
        {"colour": "red"},
        {"after_id": "-1"},
    ):
        answer = client.get("/api/jobs", params=bad, headers=A)
        assert answer.status_code == 400, bad
        assert answer.json()["type"] == "invalid"


def test_history_answers_the_events_and_404_for_another_organizations(
    client: Any, world: Any
) -> None:
    events = client.get(f"/api/jobs/{world['a']['dead']}/history", headers=A)
    assert events.status_code == 200
    assert [e["to_state"] for e in events.json()["events"]] == ["running", "dead"]
    assert client.get(f"/api/jobs/{world['b']['dead']}/history", headers=A).status_code == 404
    assert client.get("/api/jobs/x/history", headers=A).status_code == 400


def test_metrics_cover_only_the_viewers_organization(client: Any) -> None:
    metrics = client.get("/api/metrics", headers=A).json()
    assert {r["organization"] for r in metrics["job_counts"]} == {"org-A"}
    assert SECRET_TYPE not in str(metrics)
    assert metrics["workers"] is None and metrics["postgres"] is None


def test_openapi_documents_every_route(client: Any) -> None:
    doc = client.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/api/jobs",
        "/api/jobs/{id}",
        "/api/jobs/{id}/history",
        "/api/jobs/{id}/cancel",
        "/api/jobs/{id}/retry",
        "/api/jobs/{id}/events",
        "/api/metrics",
    }
    assert set(doc["paths"]["/api/jobs/{id}/cancel"]["post"]["responses"]) >= {"400", "404", "409"}


# -- writes ---------------------------------------------------------------------


def test_enqueue_answers_id_then_the_duplicate(client: Any, world: Any) -> None:
    body = {
        "job_type": "a.type",
        "payload": {"n": 1},
        "dedup_key": "k-1",
        "priority": 1,
        "max_attempts": 2,
        "timeout": 30,
        "delay": 60,
        "queue": "default",
    }
    made = client.post("/api/jobs", json=body, headers=A)
    assert made.status_code == 201, made.text
    again = client.post("/api/jobs", json=body, headers=A)
    assert again.status_code == 200
    assert again.json() == {"id": made.json()["id"], "duplicate": True}
    job = client.get(f"/api/jobs/{made.json()['id']}", headers=A).json()
    assert (job["organization"], job["payload"], job["priority"]) == ("org-A", {"n": 1}, 1)
    assert (job["max_attempts"], job["timeout_seconds"], job["created_by"]) == (2, 30, "alice")
    at = client.post(
        "/api/jobs",
        json={
            "job_type": "a.type",
            "run_at": "2999-01-01T00:00:00Z",
            "depends_on": [world["a"]["queued"]],
        },
        headers=A,
    )
    assert at.status_code == 201, at.text
    assert client.get(f"/api/jobs/{at.json()['id']}", headers=A).json()["state"] == "waiting"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"job_type": "no.such_type"},
        {"job_type": "a.type", "priority": 9},
        {"job_type": "a.type", "payload": [1, 2]},
        {"job_type": "a.type", "run_at": "tomorrow"},
        {"job_type": "a.type", "delay": -5},
        {"job_type": "a.type", "colour": "red"},
        {"job_type": "a.type", "organization": "org-B"},
        {"job_type": SECRET_TYPE, "depends_on": [1, "x"]},
        "not an object",
    ],
)
def test_enqueue_of_bad_input_is_400_and_writes_nothing(client: Any, world: Any, body: Any) -> None:
    before = count_jobs(world["dsn"])
    answer = client.post("/api/jobs", json=body, headers=A)
    assert answer.status_code == 400, answer.text
    assert answer.json()["type"] == "invalid"
    assert count_jobs(world["dsn"]) == before


def test_enqueue_body_that_is_not_json_is_400(client: Any) -> None:
    answer = client.post("/api/jobs", content=b"{oops", headers=A)
    assert answer.status_code == 400


def test_depending_on_another_organizations_job_is_400(client: Any, world: Any) -> None:
    body = {"job_type": "a.type", "depends_on": [world["b"]["queued"]]}
    assert client.post("/api/jobs", json=body, headers=A).status_code == 400


def test_cancel_and_retry_answer_the_new_state_409_and_404(client: Any, world: Any) -> None:
    job = fresh_job(world["dsn"], "queued")
    assert client.post(f"/api/jobs/{job}/cancel", headers=A).json() == {
        "id": job,
        "state": "canceled",
    }
    again = client.post(f"/api/jobs/{job}/cancel", headers=A)
    assert again.status_code == 409 and again.json()["type"] == "wrong_state"
    assert client.post(f"/api/jobs/{job}/retry", headers=A).json()["state"] == "queued"
    assert client.post(f"/api/jobs/{job}/retry", headers=A).status_code == 409
    theirs = fresh_job(world["dsn"], "queued", org="org-B")
    dead = fresh_job(world["dsn"], "dead", org="org-B")
    assert client.post(f"/api/jobs/{theirs}/cancel", headers=A).status_code == 404
    assert client.post(f"/api/jobs/{dead}/retry", headers=A).status_code == 404
    assert client.post("/api/jobs/nope/cancel", headers=A).status_code == 400
    with psycopg.connect(world["dsn"]) as conn:
        states = conn.execute(
            "select state from pgjobs.jobs where id = any(%s) order by id", ([theirs, dead],)
        ).fetchall()
    assert states == [("queued",), ("dead",)]


def test_a_read_only_app_refuses_every_write(world: Any) -> None:
    app = create_app(world["app_dsn"], **header_hooks())
    job = fresh_job(world["dsn"], "queued")
    dead = fresh_job(world["dsn"], "dead")
    before = count_jobs(world["dsn"])
    with test_client(app) as c:
        page = c.get(f"/jobs/{job}", headers=A)
        assert "read-only" in page.text and 'id="cancel"' not in page.text
        token = c.cookies.get("pgjobs_csrf")
        answers = [
            c.post("/api/jobs", json={"job_type": "a.type"}, headers=A),
            c.post(f"/api/jobs/{job}/cancel", headers=A),
            c.post(f"/api/jobs/{dead}/retry", headers=A),
            c.post(f"/jobs/{job}/cancel", data={"csrf_token": token}, headers=A),
            c.post(f"/jobs/{dead}/retry", data={"csrf_token": token}, headers=A),
            c.post("/dead/retry", data={"csrf_token": token, "id": [str(dead)]}, headers=A),
        ]
    assert [a.status_code for a in answers] == [403] * 6
    assert count_jobs(world["dsn"]) == before
    assert factories.state_of(psycopg.connect(world["dsn"]), job) == "queued"
    assert factories.state_of(psycopg.connect(world["dsn"]), dead) == "dead"


def test_api_writes_from_another_sites_page_are_refused(client: Any, world: Any) -> None:
    job = fresh_job(world["dsn"], "queued")
    evil = {**A, "origin": "https://evil.example"}
    assert client.post(f"/api/jobs/{job}/cancel", headers=evil).status_code == 403
    assert client.post("/api/jobs", json={"job_type": "a.type"}, headers=evil).status_code == 403
    same = {**A, "origin": "http://testserver"}
    assert client.post(f"/api/jobs/{job}/cancel", headers=same).status_code == 200


# -- the pages' forms -----------------------------------------------------------


def test_forms_without_the_csrf_token_are_refused(client: Any, world: Any) -> None:
    job = fresh_job(world["dsn"], "queued")
    page = client.get(f"/jobs/{job}", headers=A)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None and client.cookies.get("pgjobs_csrf") == token.group(1)
    refused = [
        client.post(f"/jobs/{job}/cancel", data={}, headers=A),
        client.post(f"/jobs/{job}/cancel", data={"csrf_token": "x" * 43}, headers=A),
        client.post(
            f"/jobs/{job}/cancel",
            data={"csrf_token": token.group(1)},
            headers={**A, "origin": "https://evil.example"},
        ),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403]
    assert factories.state_of(psycopg.connect(world["dsn"]), job) == "queued"
    # A browser without the cookie (another site's form) fails even with a token.
    stranger = test_client(client.app)
    assert (
        stranger.post(
            f"/jobs/{job}/cancel", data={"csrf_token": token.group(1)}, headers=A
        ).status_code
        == 403
    )
    done = client.post(
        f"/jobs/{job}/cancel",
        data={"csrf_token": token.group(1)},
        headers=A,
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == f"/jobs/{job}"
    assert factories.state_of(psycopg.connect(world["dsn"]), job) == "canceled"


def test_retry_all_shown_requeues_exactly_the_dead_jobs_listed(client: Any, world: Any) -> None:
    dead = [fresh_job(world["dsn"], "dead") for _ in range(2)]
    page = client.get("/dead", headers=A)
    assert all(f'name="id" value="{d}"' in page.text for d in dead)
    token = client.cookies.get("pgjobs_csrf")
    done = client.post(
        "/dead/retry",
        data={"csrf_token": token, "id": [str(d) for d in dead]},
        headers=A,
        follow_redirects=False,
    )
    assert done.status_code == 303
    with psycopg.connect(world["dsn"]) as conn:
        assert [factories.state_of(conn, d) for d in dead] == ["queued", "queued"]


# -- scope ------------------------------------------------------------------------


PAGES = ("/", "/jobs", "/dead", "/workers", "/jobs?state=dead", "/schedules")


def test_pages_of_one_organization_never_show_another(client: Any, world: Any) -> None:
    for path in (*PAGES, f"/jobs/{world['a']['dead']}"):
        page = client.get(path, headers=A)
        assert page.status_code == 200, path
        assert "Organization <b>org-A</b>" in page.text
        assert SECRET_TYPE not in page.text and "org-B" not in page.text, path
    for job in world["b"].values():
        assert client.get(f"/jobs/{job}", headers=A).status_code == 404


def test_an_operator_app_says_so_on_every_page(world: Any, logins: Logins) -> None:  # noqa: F811
    app = create_app(as_user(world["dsn"], logins.admin))
    with test_client(app) as c:
        for path in PAGES:
            page = c.get(path)
            assert page.status_code == 200, path
            assert "Operator view: every organization, with pgjobs_admin rights" in page.text
        assert c.get(f"/api/jobs/{world['b']['queued']}").status_code == 200


def test_no_page_lets_htmx_evaluate_code(world: Any, logins: Logins) -> None:  # noqa: F811
    app = create_app(as_user(world["dsn"], logins.admin))
    with test_client(app) as c:
        for path in PAGES:
            page = c.get(path)
            assert """content='{"allowEval": false, "allowScriptTags": false}'""" in page.text


def test_a_superuser_dsn_still_runs_requests_under_row_level_security(world: Any) -> None:
    app = create_app(world["dsn"], **header_hooks())
    with test_client(app) as c:
        assert c.get(f"/api/jobs/{world['b']['queued']}", headers=A).status_code == 404
        assert c.get(f"/api/jobs/{world['a']['queued']}", headers=A).status_code == 200


def test_a_request_the_hook_gives_no_organization_sees_nothing(client: Any, world: Any) -> None:
    assert client.get(f"/api/jobs/{world['a']['queued']}").status_code == 403
    assert client.get("/api/jobs").status_code == 403
    assert client.get("/").status_code == 403


def test_a_login_role_outside_pgjobs_app_is_told_what_to_grant(
    world: Any,
    logins: Logins,  # noqa: F811
) -> None:
    app = create_app(as_user(world["dsn"], logins.admin), **header_hooks())
    with test_client(app) as c:
        answer = c.get("/api/jobs", headers=A)
    assert answer.status_code == 403
    assert "GRANT pgjobs_app" in answer.json()["error"]


def test_async_hooks_are_awaited(world: Any) -> None:
    async def organization_for(request: Any) -> str:
        return "org-A"

    app = create_app(world["app_dsn"], organization_for=organization_for)
    with test_client(app) as c:
        jobs = c.get("/api/jobs").json()["jobs"]
    assert jobs and {j["organization"] for j in jobs} == {"org-A"}


def test_enqueue_through_python_is_visible_to_the_api(client: Any, world: Any) -> None:
    with psycopg.connect(world["app_dsn"]) as conn, pgjobs.tenant(conn, "org-A"):
        job = pgjobs.enqueue(conn, "a.type", {"from": "python"}).id
    assert client.get(f"/api/jobs/{job}", headers=A).json()["payload"] == {"from": "python"}
