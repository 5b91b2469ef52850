"""The job page's Logs panel in a real browser (Debian's chromium through Playwright) against a
real `trainyard up`: it shows the job's lines with their level and time, follows the running
job live, keeps the reader's place when they scrolled up, shows log text as text (never
markup), and stops following when the job has ended. Screenshot:
tests/artifacts/screenshots/job-logs.png."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest

from db.store import Store
from tests.e2e.services import serving
from trainyard.local_service import LocalService

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("TRAINYARD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
XSS = "<img src=x onerror=alert(1)> <b>not bold</b>"
# long enough to watch: ~8 ms a step on one core, 45 steps an epoch
RUNNING_MLP = {"epochs": 40, "hidden_sizes": [1024, 1024], "batch_size": 32, "seed": 5}


def _unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is missing: pip install -e '.[test]'")
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing: run scripts/install-test-tools.sh as root")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def service(tmp_path, browser, request):
    running = LocalService.embedded(tmp_path, {"TRAINYARD_TORCH_THREADS": "1",
                                               "TRAINYARD_METRICS_FLUSH_SECONDS": "0.2"})
    with serving(running, request):
        yield running


def wait_until(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_the_logs_panel_follows_a_running_job(browser, service):
    job = service.http.post("/jobs", json={"model": "mlp", "dataset": "digits",
                                           "hyperparameters": RUNNING_MLP}).json()
    service.wait_status(job["id"], {"running"}, timeout=120)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    dialogs: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{service.url}/#/jobs/{job['id']}")

    panel = page.locator("#job-logs")
    rows = page.locator("#job-log-lines .log-line")
    wait_until(lambda: panel.get_attribute("data-state") == "following" and rows.count() > 0,
               "the panel to show lines and follow the job")
    assert page.locator("#job-logs h2").inner_text() == "Logs"
    first_count = rows.count()
    first = rows.first
    assert "claimed by" in first.locator(".log-message").inner_text()
    assert first.locator(".log-level").inner_text() == "INFO"
    assert first.locator(".log-level").evaluate("el => getComputedStyle(el).color") == \
        "rgb(37, 99, 235)", "INFO in its colour"
    assert first.locator("time").inner_text().count(":") == 2

    # live: new lines arrive while the job runs, and the view keeps to the newest
    wait_until(lambda: rows.count() >= first_count + 6, "new lines while the job runs", 90)
    lines = page.locator("#job-log-lines")
    wait_until(lambda: lines.evaluate(
        "el => el.scrollHeight > el.clientHeight "
        "&& el.scrollHeight - el.scrollTop - el.clientHeight <= 24"), "auto-scroll", 30)

    # a line written with markup in it is shown as text, never as markup
    store = Store(f"sqlite:///{service.home / 'trainyard.db'}")
    try:
        store.add_job_logs(job["id"], [(None, dt.datetime.now(dt.UTC), "ERROR",
                                        "trainyard.test", XSS)])
    finally:
        store.close()
    xss_row = page.locator("#job-log-lines .log-line", has_text="not bold")
    xss_row.wait_for(timeout=30_000)
    assert xss_row.locator(".log-message").inner_text() == XSS
    assert xss_row.locator(".log-level").evaluate("el => getComputedStyle(el).color") == \
        "rgb(220, 38, 38)", "ERROR in its colour"
    assert page.locator("#job-log-lines img, #job-log-lines b").count() == 0

    # the reader scrolls up: new lines do not pull the view down; a button goes there
    lines.evaluate("el => { el.scrollTop = 0; }")
    scrolled_at = rows.count()
    wait_until(lambda: rows.count() > scrolled_at, "more lines after scrolling up", 90)
    assert lines.evaluate("el => el.scrollTop") == 0
    newest = page.locator("#job-logs button", has_text="Newest")
    assert newest.is_visible()

    # the job ends: its last line says how, and the panel stops following
    service.wait_status(job["id"], {"succeeded", "failed"}, timeout=240)
    wait_until(lambda: panel.get_attribute("data-state") == "ended", "the panel to stop", 30)
    newest.click()
    assert "succeeded" in rows.last.locator(".log-message").inner_text()
    assert page.locator("#job-log-state").inner_text() == "job succeeded"
    api_lines = service.http.get(f"/jobs/{job['id']}/logs",
                                 params={"limit": 5000}).json()["lines"]
    assert rows.count() == len(api_lines), "every line once, none twice"
    page.locator("#job-logs").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "job-logs.png"), full_page=False)
    context.close()
    assert errors == [] and dialogs == [], (errors, dialogs)
