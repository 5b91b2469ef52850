"""The dashboard in a real browser: Debian's chromium driven by Playwright against a
real `trainyard up` (API, dashboard and a worker; SQLite and the file-system queue).

Never `playwright install`: the browser is /usr/bin/chromium (scripts/install-test-tools.sh puts
it there). Without it, or without the playwright package, these tests skip with the reason, and
fail under CI=true. Screenshots of every page, at 1280x800 and 390 px wide, are saved in
tests/artifacts/screenshots/ (ignored by git) for a reviewer to look at.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import pytest

from trainyard.local_service import LocalService

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("TRAINYARD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
XSS_NAME = "<img src=x onerror=alert(1)>"
SMALL = {"epochs": 2, "hidden_sizes": [32, 32], "seed": 1}
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is missing: pip install -e '.[test]'")
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing: run scripts/install-test-tools.sh "
                     "(apt-get install chromium) as root")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory, browser):
    """`trainyard up` in a temporary home, shared by this module's tests (in file order)."""
    home = tmp_path_factory.mktemp("dashboard-home")
    running = LocalService.embedded(home)
    try:
        running.wait_healthy()
        yield running
    finally:
        running.stop()


class Page:
    """A browser tab that fails the test on any JavaScript error or dialog (alert included)."""

    def __init__(self, browser, service, viewport=DESKTOP):
        self.context = browser.new_context(viewport=viewport, accept_downloads=True)
        self.page = self.context.new_page()
        self.base = service.url + "/"
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # Console errors fail the test too, except chromium's note on an HTTP error status
        # (the form's 422 is expected and handled).
        self.page.on("console", lambda m: m.type == "error"
                     and not m.text.startswith("Failed to load resource")
                     and self.errors.append(m.text))

        def on_dialog(dialog):
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        self.page.on("dialog", on_dialog)

    def open(self, hash_path: str = "", timeout: float = 20_000):
        self.page.goto(self.base + hash_path)
        return self.ready(timeout)

    def ready(self, timeout: float = 20_000):
        self.page.wait_for_selector("#view[data-state=ready]", timeout=timeout)
        return self.page

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        assert self.dialogs == [], f"a dialog opened: {self.dialogs}"
        assert self.errors == [], f"JavaScript errors: {self.errors}"


def traces_drawn(page, selector: str) -> int:
    """How many plotly line/marker traces the chart has rendered as SVG."""
    return page.eval_on_selector(selector, "el => el.querySelectorAll('g.trace').length")


def wait_js(page, expression: str, timeout: float = 20_000) -> None:
    """Wait until a JavaScript expression is true, polled from here: Playwright's own
    wait_for_function compiles its predicate with eval() in the page, which the dashboard's
    Content-Security-Policy (no unsafe-eval) rightly refuses."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)


def wait_for(predicate, timeout: float = 120, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out: {message}")


def test_empty_jobs_page_says_what_to_do(browser, service):
    tab = Page(browser, service)
    page = tab.open()
    text = page.inner_text("#jobs-empty")
    assert "No jobs yet: submit one with the New job form" in text
    assert "trainyard submit" in text and "curl -X POST" in text and service.url in text
    tab.shot("01-jobs-empty-1280")
    tab.close()


def test_submit_form_shows_api_errors_inline_then_opens_the_job_and_draws_it(browser, service):
    tab = Page(browser, service)
    page = tab.open("#/new")
    page.select_option("#model", "mlp")
    # The form is generated from GET /models: every hyperparameter, with its range.
    catalogue = service.http.get("/models").json()["mlp"]["hyperparameters"]
    for key in catalogue:
        assert page.locator(f"#hp-{key}").count() == 1, key
    assert "> 0 and ≤ 10" in page.inner_text('[data-field="hp.lr"] .hint')
    assert page.input_value("#hp-epochs") == str(catalogue["epochs"]["default"])

    page.fill("#name", XSS_NAME)
    page.fill("#hp-epochs", "2")
    page.fill("#hp-hidden_sizes", "32, 32")
    page.fill("#hp-seed", "1")
    page.fill("#hp-lr", "0")  # refused by the API (must be > 0): the 422 shows under the field
    page.click("#submit-job")
    error = page.wait_for_selector("#error-hp-lr:not([hidden])")
    assert "must be > 0" in error.inner_text()
    assert page.url.endswith("#/new")
    assert service.http.get("/jobs").json()["total"] == 0
    tab.shot("02-submit-422-1280")

    page.fill("#hp-lr", "0.002")
    page.click("#submit-job")
    page.wait_for_url(re.compile(r"#/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    job = service.http.get(f"/jobs/{job_id}").json()
    assert job["name"] == XSS_NAME and job["hyperparameters"]["hidden_sizes"] == [32, 32]
    assert job["hyperparameters"]["epochs"] == 2 and job["hyperparameters"]["lr"] == 0.002

    # Live: the page follows the job to the end without a reload.
    tab.ready()
    page.wait_for_selector("#view[data-status=succeeded]", timeout=180_000)
    title = page.inner_text("h1.job-title")
    assert XSS_NAME in title  # shown as text...
    assert page.locator("img").count() == 0  # ...and never turned into an element
    assert page.inner_text(".badge") == "succeeded"
    wait_js(page, "document.querySelector('#chart-loss g.trace') !== null")
    assert traces_drawn(page, "#chart-loss") == 2  # train loss per step, val loss per epoch
    assert traces_drawn(page, "#chart-headline") == 1
    assert traces_drawn(page, "#chart-grad") >= 3  # one per layer
    assert page.locator("#chart-loss path.js-line").count() >= 2
    # Checkpoints: one per epoch, with size, sha256 and a download that matches them.
    rows = page.locator("#job-checkpoints tbody tr")
    assert rows.count() == 2
    checkpoints = service.http.get(f"/jobs/{job_id}/checkpoints").json()
    assert checkpoints[-1]["sha256"] in rows.nth(1).inner_text()
    with page.expect_download() as info:
        rows.nth(1).locator("a", has_text="Download").click()
    assert Path(info.value.path()).stat().st_size == checkpoints[-1]["size"]
    config = page.inner_text("#job-config")
    assert "hidden_sizes" in config and "[32,32]" in config
    assert page.inner_text("dl.summary [data-key=attempts] dd") == "1"
    tab.shot("03-job-1280")
    tab.close()

    phone = Page(browser, service, PHONE)
    page = phone.open(f"#/jobs/{job_id}")
    wait_js(page, "document.querySelector('#chart-loss g.trace') !== null")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.shot("04-job-390")
    phone.close()


def test_jobs_page_updates_live_filters_and_cancels(browser, service):
    tab = Page(browser, service)
    page = tab.open()
    assert page.locator("#jobs tbody tr").count() == 1
    # Submitted while the page is open: the row appears and starts running, with no reload.
    long_job = service.http.post("/jobs", json={
        "model": "mlp", "dataset": "digits", "name": "long one",
        "hyperparameters": {**SMALL, "epochs": 500}}).json()
    row = f'#jobs tr[data-job-id="{long_job["id"]}"]'
    page.wait_for_selector(row, timeout=10_000)
    page.wait_for_selector(f"{row} .badge.status-running", timeout=60_000)
    wait_js(page, 
        f"document.querySelector('{row} .progress-label').textContent.includes('ETA')",
        timeout=30_000)
    assert "epoch" in page.inner_text(f"{row} .progress-label")
    tab.shot("05-jobs-running-1280")
    page.click(f"{row} button:has-text('Cancel')")
    page.wait_for_selector(f"{row} .badge.status-cancelled", timeout=20_000)
    assert service.http.get(f"/jobs/{long_job['id']}").json()["status"] == "cancelled"
    assert page.is_hidden(f"{row} button:has-text('Cancel')")

    page.select_option("#filter-status", "succeeded")
    tab.ready()
    wait_js(page, "document.querySelectorAll('#jobs tbody tr').length === 1")
    assert "succeeded" in page.inner_text("#jobs tbody")
    assert "#/?status=succeeded" in page.url
    page.select_option("#filter-model", "cnn")
    tab.ready()
    page.wait_for_selector("#jobs-empty:not([hidden])")
    assert "No jobs match these filters" in page.inner_text("#jobs-empty")
    tab.close()


def test_compare_two_runs_named_by_what_differs(browser, service):
    jobs = service.http.get("/jobs", params={"status": "succeeded"}).json()["items"]
    if jobs:  # the run the submit test made (named like an <img> tag)
        relu = jobs[0]
    else:  # this test alone (pytest -k): make its own
        relu = service.http.post("/jobs", json={"model": "mlp", "dataset": "digits",
                                                "name": XSS_NAME, "hyperparameters": SMALL}).json()
        assert service.wait_status(relu["id"], {"succeeded", "failed"})["status"] == "succeeded"
    sigmoid = service.http.post("/jobs", json={
        "model": "mlp", "dataset": "digits", "name": "sigmoid run",
        "hyperparameters": {**SMALL, "activation": "sigmoid"}}).json()
    assert service.wait_status(sigmoid["id"], {"succeeded", "failed"})["status"] == "succeeded"

    tab = Page(browser, service)
    page = tab.open()
    for job_id in (relu["id"], sigmoid["id"]):
        page.check(f'#jobs tr[data-job-id="{job_id}"] input.select-run')
    assert page.inner_text("#compare-selected") == "Compare selected (2)"
    page.click("#compare-selected")
    tab.ready()
    assert page.url.endswith(f"#/compare?ids={relu['id']}%2C{sigmoid['id']}")
    for chart in ("#compare-chart-a", "#compare-chart-b", "#compare-scatter"):
        wait_js(page, f"document.querySelector('{chart} g.trace') !== null")
    assert traces_drawn(page, "#compare-chart-a") == 2
    legend = page.eval_on_selector_all("#compare-chart-a .legendtext", "els => els.map(e => e.textContent)")
    assert legend == [f"#{relu['id']} activation=relu", f"#{sigmoid['id']} activation=sigmoid"]
    assert page.input_value("#compare-chart-b-metric") == "val_accuracy"
    # The config table shows only what differs, until asked for everything.
    heads = page.locator("#compare-config thead th").all_inner_texts()
    assert heads == ["run", "status", "activation"]
    page.uncheck("#only-differing")
    heads = page.locator("#compare-config thead th").all_inner_texts()
    assert {"lr", "epochs", "hidden_sizes", "activation", "model"} <= set(heads)
    # best / final / value at the chosen epoch, for each metric
    metrics = page.inner_text("#compare-metrics")
    assert "best" in metrics and "final" in metrics and "epoch 2" in metrics
    page.fill("#at-epoch", "1")
    assert "epoch 1" in page.inner_text("#compare-metrics")
    series = service.http.get("/compare/series", params={
        "ids": f"{relu['id']},{sigmoid['id']}"}).json()["series"]
    first_epoch = series[str(relu["id"])]["val_accuracy"]["epochs"]["mean"][0]
    assert f"{first_epoch * 100:.1f}%" in page.inner_text("#compare-metrics")
    # The run named like an <img> tag is text here too, in tables and in plotly's legend.
    assert XSS_NAME in page.inner_text("#compare-config")
    assert page.locator("img").count() == 0
    page.select_option("#scatter-x", "activation")
    assert page.locator("#compare-scatter g.trace path.point").count() == 2
    page.check("#only-differing")
    tab.shot("06-compare-1280")
    tab.close()

    phone = Page(browser, service, PHONE)
    page = phone.open(f"#/compare?ids={relu['id']},{sigmoid['id']}")
    wait_js(page, "document.querySelector('#compare-chart-a g.trace') !== null")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.shot("07-compare-390")
    page = phone.open()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.shot("08-jobs-390")
    page = phone.open("#/new")
    phone.shot("09-submit-390")
    phone.close()

    tab = Page(browser, service)
    tab.open()
    tab.shot("10-jobs-1280")
    tab.open("#/compare")
    assert "Pick runs to compare" in tab.page.inner_text("#compare-empty")
    tab.close()


def test_compare_a_hundred_runs(browser, service):
    """100 runs of 2,000 steps each, written straight to the service's database (training
    them would take minutes): the page draws all of them, each its own colour and dash."""
    from db.store import Store

    store = Store(f"sqlite:///{service.home / 'trainyard.db'}")
    ids = []
    try:
        for r in range(100):
            hp = {**SMALL, "lr": [0.001, 0.003, 0.01, 0.03][r % 4], "seed": r}
            job = store.create_job("mlp", "digits", hp, device="cpu", name=f"sweep-{r}")
            store.claim_job(job.id, "synthetic")
            points = []
            for step in range(1, 2001):
                epoch = (step - 1) // 1000 + 1
                points.append(("train_loss", step, epoch,
                               2.3 * math.exp(-step * hp["lr"] / 3) + 0.05 * math.sin(step + r), None))
                if step % 1000 == 0:
                    points.append(("val_accuracy", step, epoch, 1 - math.exp(-step * hp["lr"]), None))
            store.add_metrics(job.id, points)
            store.finish_job(job.id, "succeeded")
            ids.append(job.id)
    finally:
        store.close()

    tab = Page(browser, service)
    started = time.perf_counter()
    page = tab.open(f"#/compare?ids={ids[0]}-{ids[-1]}", timeout=30_000)
    elapsed = time.perf_counter() - started
    assert traces_drawn(page, "#compare-chart-a") == 100
    assert traces_drawn(page, "#compare-chart-b") == 100
    assert page.locator("#compare-config tbody tr").count() == 100
    assert page.locator("#compare-config thead th").all_inner_texts() == ["run", "status", "lr", "seed"]
    colours = page.eval_on_selector_all(
        "#compare-chart-a g.trace path.js-line",
        "paths => paths.map(p => p.style.stroke + '|' + p.style.strokeDasharray)")
    assert len(set(colours[:40])) == 40  # 10 colours x 4 dash patterns before any repeats
    print(f"\ncompare page with 100 runs x 2,000 steps ready in {elapsed:.2f} s")
    tab.shot("11-compare-100-runs-1280")
    tab.close()


def test_job_page_shows_sampled_texts_error_and_attempts(browser, service):
    """An RNN-LM run that failed on its second attempt, written straight to the database: the
    page shows each epoch's sampled text, the error and the attempts, all as text."""
    from db.store import Store

    store = Store(f"sqlite:///{service.home / 'trainyard.db'}")
    try:
        job = store.create_job("rnn_lm", "pydocs", {"epochs": 3}, name="lm <b>bold</b>")
        store.claim_job(job.id, "worker-a")
        store.requeue_job(job.id, error="worker-a died")
        store.claim_job(job.id, "worker-b")
        for epoch in (1, 2):
            store.add_metrics(job.id, [("val_perplexity", epoch * 10, epoch, 40.0 / epoch, None),
                                       ("train_loss", epoch * 10, epoch, 3.0 / epoch, None)])
            store.add_text(job.id, epoch, epoch * 10, "sample",
                           f"epoch {epoch} says <script>alert({epoch})</script> & more")
        store.finish_job(job.id, "failed", error="RuntimeError: <img src=x onerror=alert(2)>")
    finally:
        store.close()

    tab = Page(browser, service)
    page = tab.open(f"#/jobs/{job.id}")
    page.wait_for_selector("#view[data-status=failed]")
    texts = page.locator("#job-texts pre").all_inner_texts()
    assert texts == ["epoch 2 says <script>alert(2)</script> & more",
                     "epoch 1 says <script>alert(1)</script> & more"]  # newest first
    assert page.inner_text("#job-error") == "RuntimeError: <img src=x onerror=alert(2)>"
    assert page.inner_text("dl.summary [data-key=attempts] dd") == "2"
    assert page.inner_text("dl.summary [data-key=worker] dd") == "worker-b"
    # Each attempt, as far as the server keeps their history.
    history = service.http.get(f"/jobs/{job.id}").json().get("attempt_history", [])
    rows = page.locator("#job-attempts tbody tr")
    assert rows.count() == len(history)
    for row, attempt in zip(rows.all(), history, strict=True):
        assert (attempt["worker"] or "–") in row.inner_text()
    assert "lm <b>bold</b>" in page.inner_text("h1.job-title")
    assert page.locator("img, script:not([src]), h1 b").count() == 0
    wait_js(page, "document.querySelector('#chart-headline g.trace') !== null")
    assert "perplexity" in page.inner_text("#chart-headline").lower() or traces_drawn(
        page, "#chart-headline") == 1
    tab.shot("12-job-lm-failed-1280")
    tab.close()


def test_sign_in_with_an_api_key_then_submit_and_sign_out(browser, tmp_path):
    """A service that requires keys: the page asks for one, refuses a wrong one, and with a
    right one works as usual (the form's POST carries the session's CSRF token); each user
    sees only their own jobs; signing out asks again."""
    admin_key = "admin-" + "k" * 40
    secured = LocalService.embedded(tmp_path, {"TRAINYARD_REQUIRE_KEYS": "1",
                                               "TRAINYARD_ADMIN_KEY": admin_key})
    try:
        secured.wait_healthy()
        made = secured.cli("keys", "create", "--name", "alice")
        assert made.returncode == 0, made.stderr
        alice = made.stdout.strip().splitlines()[-1]
        admin = {"Authorization": f"Bearer {admin_key}"}
        theirs = secured.http.post("/jobs", headers=admin, json={
            "model": "mlp", "dataset": "digits", "name": "admins-run", "hyperparameters": SMALL})
        assert theirs.status_code == 201

        tab = Page(browser, secured)
        page = tab.page
        page.goto(tab.base)
        page.wait_for_selector("#view[data-state=signin]")
        assert "trainyard keys create" in page.inner_text("#signin")
        tab.shot("13-sign-in-1280")
        page.fill("#signin-key", "ty_not-a-key")
        page.click("#signin button[type=submit]")
        page.wait_for_selector("#signin-error:has-text('not valid')")
        page.fill("#signin-key", alice)
        page.click("#signin button[type=submit]")
        tab.ready()
        assert page.inner_text("#who") == "alice"
        assert "No jobs yet" in page.inner_text("#view")  # the admin's job is not alice's
        cookies = tab.context.cookies()
        assert [c["name"] for c in cookies] == ["trainyard_session"]
        assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
        assert alice not in cookies[0]["value"]
        assert page.evaluate("document.cookie") == ""  # the page's scripts cannot read it

        page.goto(tab.base + "#/new")
        tab.ready()
        page.select_option("#model", "mlp")
        page.fill("#hp-epochs", "1")
        page.fill("#name", "alices-run")
        page.click("#submit-job")
        page.wait_for_selector("#view[data-status]")
        job_id = int(re.search(r"#/jobs/(\d+)", page.url).group(1))
        job = secured.http.get(f"/jobs/{job_id}", headers={"Authorization": f"Bearer {alice}"})
        assert job.json()["name"] == "alices-run"
        # another user's job is "not found" on the page too
        page.goto(tab.base + f"#/jobs/{theirs.json()['id']}")
        page.wait_for_selector(f"text=Job {theirs.json()['id']} does not exist")

        page.click("#sign-out")
        page.wait_for_selector("#view[data-state=signin]")
        assert tab.context.cookies() == []
        # the admin sees everyone's jobs, each with its owner
        page.fill("#signin-key", admin_key)
        page.click("#signin button[type=submit]")
        tab.ready()
        assert page.inner_text("#who") == "admin (admin)"
        page.goto(tab.base + "#/")  # signing in went back to the page it was on: alice's job
        page.wait_for_selector(f"#jobs tr[data-job-id='{job_id}']")
        row = page.locator(f"#jobs tr[data-job-id='{job_id}']")
        assert row.locator(".owner").inner_text() == "by alice"
        assert page.locator(f"#jobs tr[data-job-id='{theirs.json()['id']}'] .owner").inner_text() == ""
        tab.shot("14-jobs-admin-1280")
        tab.close()
    finally:
        secured.stop()
