"""The dashboard in a real browser: Debian's chromium, driven by Selenium
through Debian's chromedriver. Under CI=true a missing browser fails the test.

The job page follows a running job without a reload; the dead-letter page's
retry button brings a job back; a viewer scoped to org-A gets a 404 for
org-B's job and never sees org-B. Two screenshots land in docs/ for the README.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgjobs
import tests.support.web_handlers  # noqa: F401 - registers the web.* job types
from pgjobs.web import create_app
from tests.support import factories
from tests.support.web import ROOT, serve, worker
from tests.support.web_handlers import GATE_TABLE

pytestmark = pytest.mark.slow

# The README's screenshots are taken by this test. They are rewritten only when
# asked (PGJOBS_SCREENSHOTS=docs), so a test run leaves the tree clean; else they
# go to a scratch directory, which still proves the page can be captured.
DOCS = ROOT / "docs" if os.environ.get("PGJOBS_SCREENSHOTS") == "docs" else None
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ORG_COOKIE = "demo_org"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium") or str(CHROMIUM)
    driver_path = shutil.which("chromedriver") or str(CHROMEDRIVER)
    if not (Path(chromium).exists() and Path(driver_path).exists()):
        message = "Debian's chromium and chromium-driver are not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (.ci/run installs them)")
        pytest.skip(message + ": apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,860",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def until(driver: Any, condition: Callable[[Any], Any], timeout: float = 30) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # htmx swaps elements (outerHTML) while the page follows a job: one found
    # just before a swap is stale when read, and the next poll finds the new one.
    ignored = (StaleElementReferenceException,)
    wait = WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=ignored)
    return wait.until(condition)


def text(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def as_org(driver: Any, url: str, org: str) -> None:
    """The host application's login, reduced to a cookie the hook reads."""
    driver.get(f"{url}/static/pgjobs.css")
    driver.delete_all_cookies()
    driver.add_cookie({"name": ORG_COOKIE, "value": org})


def cookie_app(dsn: str) -> Any:
    return create_app(
        dsn,
        organization_for=lambda request: request.cookies.get(ORG_COOKIE),
        actor_for=lambda request: "browser-user",
        allow_actions=True,
    )


def test_a_job_page_follows_progress_to_completed_without_reload(
    browser: Any, dsn: str, tmp_path: Path
) -> None:
    shots = DOCS or tmp_path
    shots.mkdir(exist_ok=True)
    with psycopg.connect(dsn) as conn:
        conn.execute(GATE_TABLE)
        conn.execute(
            "insert into pgjobs.job_types (name, handler) values"
            " ('report.monthly', 'tests.support.handlers:noop')"
        )
        for org in ("org-A", "org-B"):
            for _ in range(3):
                factories.make_job(conn, "completed", job_type="report.monthly", organization=org)
        factories.make_job(conn, "dead", job_type="report.monthly", organization="org-A")
        job = pgjobs.enqueue(conn, "web.steps", {"report": "2026-11"}, organization="org-A").id
    with serve(cookie_app(dsn)) as url, worker(dsn):
        as_org(browser, url, "org-A")
        browser.get(f"{url}/jobs/{job}")
        browser.execute_script("window.__sameDocument = true;")
        until(browser, lambda d: text(d, "#job-state") == "running")
        set_gate(dsn, 40)
        until(browser, lambda d: text(d, "#job-progress") == "40.0%")
        width = browser.execute_script("return document.getElementById('job-bar').style.width")
        assert width in ("40%", "40.0%")
        browser.save_screenshot(str(shots / "dashboard-job.png"))
        set_gate(dsn, 100)
        until(browser, lambda d: text(d, "#job-state") == "completed")
        assert text(browser, "#job-progress") == "100.0%"
        assert browser.execute_script("return window.__sameDocument === true")
        # The history was fetched anew when the state changed.
        until(browser, lambda d: "completed" in text(d, "#attempts"))
    with serve(create_app(dsn, allow_actions=True)) as url, worker(dsn):
        browser.delete_all_cookies()
        browser.get(f"{url}/")
        until(browser, lambda d: "1 live worker" in text(d, "main"))
        browser.save_screenshot(str(shots / "dashboard-overview.png"))
    assert (shots / "dashboard-job.png").stat().st_size > 10_000
    assert (shots / "dashboard-overview.png").stat().st_size > 10_000


def set_gate(dsn: str, value: int) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("update web_gate set value = %s", (value,))


def test_the_dead_letter_retry_button_brings_a_job_back(browser: Any, dsn: str) -> None:
    from selenium.webdriver.common.by import By

    with psycopg.connect(dsn) as conn:
        dead = factories.make_job(conn, "dead", organization="org-A")
    with serve(cookie_app(dsn)) as url:
        as_org(browser, url, "org-A")
        browser.get(f"{url}/dead")
        browser.find_element(By.CSS_SELECTOR, f"button.retry[data-id='{dead}']").click()
        until(browser, lambda d: not d.find_elements(By.ID, f"dead-{dead}"))
    with psycopg.connect(dsn) as conn:
        assert factories.state_of(conn, dead) == "queued"


def test_a_viewer_of_one_organization_never_sees_another(browser: Any, dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "insert into pgjobs.job_types (name, handler) values"
            " ('b.private', 'tests.support.handlers:noop')"
        )
        mine = factories.make_job(conn, "queued", organization="org-A")
        theirs = factories.make_job(conn, "dead", job_type="b.private", organization="org-B")
    with serve(cookie_app(dsn)) as url:
        as_org(browser, url, "org-A")
        browser.get(f"{url}/jobs/{theirs}")
        assert text(browser, "h1") == "404"
        for path in ("/", "/jobs", "/dead", "/workers", f"/jobs/{mine}"):
            browser.get(url + path)
            assert "org-B" not in browser.page_source and "b.private" not in browser.page_source
        browser.get(f"{url}/jobs")
        browser.execute_script("window.__sameDocument = true;")
        with psycopg.connect(dsn) as conn:
            hidden = factories.make_job(conn, "queued", job_type="b.private", organization="org-B")
            shown = factories.make_job(conn, "queued", organization="org-A")
        # The list updates itself with org-A's new job, and only that one.
        until(browser, lambda d: f"/jobs/{shown}" in d.page_source)
        assert browser.execute_script("return window.__sameDocument === true")
        assert f'/jobs/{hidden}"' not in browser.page_source
        assert "org-B" not in browser.page_source and "b.private" not in browser.page_source
