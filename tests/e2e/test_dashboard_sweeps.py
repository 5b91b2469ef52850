"""The sweep pages in a real browser: Debian's chromium driven by Playwright against a real
`trainyard up` (API, dashboard and a worker on SQLite and the file-system queue), as in
test_dashboard.py, whose strict Page (any JavaScript error or dialog fails the test) and
browser fixture these tests share.

A real grid sweep of four MLP trials (hidden sizes x activation, three short epochs each, ASHA
early stopping) is followed from the sweeps list to its page: its trials table with the pruned
trials marked, sorted by objective, its charts, and "Compare selected". A long sweep is
cancelled from its page. A sweep of 1,000 finished trials, written to the database before the
service starts, shows how long the page takes to open. Screenshots land in
tests/artifacts/screenshots/ (sweeps-list.png, sweep-page.png, ...).
"""

from __future__ import annotations

import math
import random
import re
import time

import pytest
from test_dashboard import PHONE, Page, traces_drawn, wait_js
from test_dashboard import browser as browser  # noqa: F401 - fixtures of this module too
from test_dashboard import service as service  # noqa: F401

from trainyard.local_service import LocalService

pytestmark = pytest.mark.e2e

SWEEP_NAME = "grid <img src=x onerror=alert(1)>"
GRID = {
    "name": SWEEP_NAME, "model": "mlp", "dataset": "digits", "method": "grid",
    "hyperparameters": {"epochs": 3, "steps_per_epoch": 3, "batch_size": 32},
    "space": {"hidden_sizes": {"values": [[8, 8], [16, 16]]},
              "activation": {"values": ["relu", "tanh"]}},
    "early_stopping": {"method": "asha", "min_epochs": 1, "reduction_factor": 2},
}


def wait_sweep(service, sweep_id: int, timeout: float = 180) -> dict:
    return service.wait_for(
        lambda: (s := service.http.get(f"/sweeps/{sweep_id}").json())["status"] != "running" and s,
        f"sweep {sweep_id} still running", timeout=timeout)


def rows_in_order(page) -> list[int]:
    return [int(v) for v in page.eval_on_selector_all(
        "#sweep-trials tbody tr", "rows => rows.map(r => r.dataset.jobId)")]


def sweep_requests(requests: list[str], sweep_id: int) -> int:
    return sum(1 for url in requests if re.search(rf"/sweeps/{sweep_id}(\?|$)", url))


def test_a_grid_sweep_from_the_list_to_its_trials_charts_and_compare(browser, service):  # noqa: F811
    made = service.http.post("/sweeps", json=GRID)
    assert made.status_code == 201, made.text
    sweep_id = made.json()["id"]

    tab = Page(browser, service)
    page = tab.open("#/sweeps")
    assert page.locator("nav a[data-nav=sweeps].active").count() == 1
    row = f'#sweeps tr[data-sweep-id="{sweep_id}"]'
    page.wait_for_selector(row)
    assert page.inner_text(f"{row} .job-name") == SWEEP_NAME  # as text, never markup
    assert "grid" in page.inner_text(f"{row} [data-label=method]")
    # Live: the list follows the sweep to its end without a reload.
    page.wait_for_selector(f"{row} .badge.status-succeeded", timeout=180_000)
    sweep = wait_sweep(service, sweep_id)
    assert sweep["status"] == "succeeded" and sweep["launched"] == 4
    counts = sweep["counts"]
    pruned = counts.get("pruned", 0)
    assert pruned >= 1, f"ASHA pruned nothing: {counts}"  # asha, factor 2, of 4 trials
    wait_js(page, f"document.querySelector('{row} .progress-label').textContent.includes('{pruned} pruned')")
    label = page.inner_text(f"{row} .progress-label")
    assert label.startswith("launched 4/4") and f"{counts['succeeded']} succeeded" in label
    best = sweep["best"]
    assert f"(trial {best['number']})" in page.inner_text(f"{row} [data-label=best]")
    tab.shot("sweeps-list")

    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.click(f"{row} .job-name")
    page.wait_for_url(re.compile(rf"#/sweeps/{sweep_id}$"))
    tab.ready()
    page.wait_for_selector("#view[data-status=succeeded]")
    assert SWEEP_NAME in page.inner_text("h1.job-title")
    assert page.locator("img").count() == 0
    assert page.inner_text("#sweep-summary [data-key=method] dd") == "grid"
    assert "asha" in page.inner_text("#sweep-summary [data-key=early\\ stopping] dd")
    assert page.is_hidden("#cancel-sweep")  # only a running sweep can be cancelled
    # The best trial, its params, and a link to its job.
    assert page.get_attribute("#best-trial-link", "href") == f"#/jobs/{best['job_id']}"
    assert "[16, 16]" in page.inner_text("#best-params") or "[8, 8]" in page.inner_text("#best-params")

    # The trials table: four rows, each a link to its job, the pruned ones marked.
    rows = page.locator("#sweep-trials tbody tr")
    assert rows.count() == 4
    assert page.locator("#sweep-trials tbody tr.row-pruned").count() == pruned
    assert page.locator("#sweep-trials tbody tr.row-pruned .badge.status-pruned").count() == pruned
    assert "at epoch" in page.inner_text("#sweep-trials tbody tr.row-pruned")
    assert page.locator(f"#sweep-trials tbody tr[data-job-id='{best['job_id']}'].row-best").count() == 1
    for trial in sweep["trials"]:
        assert page.locator(f"#sweep-trials a[href='#/jobs/{trial['job_id']}']").count() == 2
    assert rows_in_order(page) == [t["job_id"] for t in sweep["trials"]]  # by trial number
    # Sorting by the objective puts the best trial first (val_accuracy: highest).
    page.click("#sweep-trials th[data-column=objective] button")
    assert page.get_attribute("#sweep-trials th[data-column=objective]", "aria-sort") == "ascending"
    order = rows_in_order(page)
    assert order[0] == best["job_id"]
    finals = [t for t in sweep["trials"] if t["objective"] is not None]
    expected = [t["job_id"] for t in sorted(finals, key=lambda t: (-t["objective"], t["number"]))]
    assert order[:len(expected)] == expected  # completed ones best first, the pruned after
    page.click("#sweep-trials th[data-column=objective] button")
    assert page.get_attribute("#sweep-trials th[data-column=objective]", "aria-sort") == "descending"
    assert rows_in_order(page)[len(expected) - 1] == best["job_id"]
    page.click("#sweep-trials th[data-column=status] button")
    assert rows_in_order(page)[-pruned:] == [t["job_id"] for t in sweep["trials"] if t["status"] == "pruned"]

    # The charts: best so far (pruned last values, completed trials, the running best), the
    # parallel coordinates (a grey trace of the pruned, one per colour of the completed, the
    # colour bar), the importances (one bar per parameter) and every trial's curve.
    for chart in ("#sweep-best-chart", "#sweep-parallel", "#sweep-curves"):
        wait_js(page, f"document.querySelector('{chart} g.trace') !== null")
    assert traces_drawn(page, "#sweep-best-chart") == 3
    assert traces_drawn(page, "#sweep-parallel") >= 3
    annotations = page.eval_on_selector_all("#sweep-parallel g.annotation text",
                                            "els => els.map(e => e.textContent)")
    assert {"hidden_sizes", "activation", "val_accuracy", "[8, 8]", "[16, 16]", "relu", "tanh"} <= set(annotations)
    importance = service.http.get(f"/sweeps/{sweep_id}/importance").json()
    page.wait_for_selector("section[data-state=ready] > #sweep-importance", state="attached")
    if len(importance["importances"]) >= 1:
        assert page.locator("#sweep-importance g.trace.bars path").count() == len(importance["importances"])
        if importance.get("note"):  # e.g. that the pruned trials are left out
            assert page.inner_text("#sweep-importance + .chart-caption") == importance["note"]
    else:
        assert "needs two completed trials" in page.inner_text("#view")
    assert traces_drawn(page, "#sweep-curves") == 4
    opacities = page.eval_on_selector_all("#sweep-curves g.trace.scatter", "gs => gs.map(g => Number(g.style.opacity || 1))")
    assert sorted(opacities)[:pruned] == [0.4] * pruned and sorted(opacities)[pruned:] == [1] * (4 - pruned)
    legend = page.eval_on_selector_all("#sweep-curves .legendtext", "els => els.map(e => e.textContent)")
    assert sum("(pruned)" in text for text in legend) == pruned
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    tab.shot("sweep-page")

    # Ended: after one more pass the page stops asking.
    asked = sweep_requests(requests, sweep_id)
    page.wait_for_timeout(4_500)
    assert sweep_requests(requests, sweep_id) - asked <= 1

    # Compare selected: the chosen trials' runs on the compare page.
    chosen = [sweep["trials"][0]["job_id"], best["job_id"]]
    if chosen[0] == chosen[1]:
        chosen[0] = sweep["trials"][1]["job_id"]
    for job_id in chosen:
        page.check(f"#sweep-trials tr[data-job-id='{job_id}'] input.select-trial")
    assert page.inner_text("#compare-trials") == "Compare selected (2)"
    page.click("#compare-trials")
    tab.ready()
    ids = sorted(chosen)
    assert page.url.endswith(f"#/compare?ids={ids[0]}%2C{ids[1]}")
    wait_js(page, "document.querySelector('#compare-chart-a g.trace') !== null")
    assert traces_drawn(page, "#compare-chart-a") == 2
    assert {f"#{i}" for i in ids} <= set(page.locator("#compare-config tbody a").all_inner_texts())
    tab.close()

    phone = Page(browser, service, PHONE)
    page = phone.open(f"#/sweeps/{sweep_id}")
    wait_js(page, "document.querySelector('#sweep-parallel g.trace') !== null")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.shot("sweep-page-390")
    page = phone.open("#/sweeps")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.shot("sweeps-list-390")
    phone.close()


def test_cancel_a_running_sweep_from_its_page(browser, service):  # noqa: F811
    long_sweep = {**GRID, "name": "long sweep", "max_concurrent": 1,
                  "hyperparameters": {"epochs": 500, "batch_size": 32},
                  "early_stopping": {"method": "none"}}
    made = service.http.post("/sweeps", json=long_sweep)
    assert made.status_code == 201, made.text
    sweep_id = made.json()["id"]
    first = made.json()["trials"][0]["job_id"]
    service.wait_status(first, {"running"}, timeout=120)

    tab = Page(browser, service)
    page = tab.open(f"#/sweeps/{sweep_id}")
    page.wait_for_selector("#view[data-status=running]")
    assert page.is_visible("#live")
    running_row = f"#sweep-trials tr[data-job-id='{first}']"
    page.wait_for_selector(f"{running_row} .badge.status-running")
    assert page.locator("#sweep-trials tbody tr").count() == 1  # max_concurrent 1
    # Live: the running trial's latest objective moves on without a reload.
    last_cell = f"{running_row} td[data-label='last reported']"
    seen = page.inner_text(last_cell)
    wait_js(page, f"document.querySelector(\"{last_cell}\").textContent !== {seen!r}", timeout=60_000)
    # Left while the sweep runs, the page stops asking for it.
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.click("a[href='#/sweeps']")
    tab.ready()
    page.wait_for_timeout(500)
    asked = sweep_requests(requests, sweep_id)
    page.wait_for_timeout(4_500)
    assert sweep_requests(requests, sweep_id) == asked
    page.go_back()
    tab.ready()
    page.wait_for_selector("#view[data-status=running]")
    page.click("#cancel-sweep")  # POST /sweeps/{id}/cancel, with the session's CSRF token
    page.wait_for_selector("#view[data-status=cancelled]", timeout=20_000)
    assert page.inner_text(".title-line .badge") == "cancelled"
    assert page.is_hidden("#cancel-sweep")
    assert page.is_hidden("#live")
    sweep = service.http.get(f"/sweeps/{sweep_id}").json()
    assert sweep["status"] == "cancelled"
    assert {t["status"] for t in sweep["trials"]} == {"cancelled"}
    page.wait_for_selector(f"#sweep-trials tr[data-job-id='{first}'] .badge.status-cancelled")
    tab.shot("sweep-cancelled")
    service.wait_status(first, {"cancelled"})
    tab.close()


def _fill_thousand_trials(home) -> tuple[int, int]:
    """A finished random sweep of 1,000 MLP trials (ASHA-like: most pruned at epoch 1 or 3,
    the rest completed at 9), written straight to a new database; returns (sweep id, best job
    id)."""
    from db.store import Store

    rng = random.Random(7)
    store = Store(f"sqlite:///{home / 'trainyard.db'}")
    try:
        store.migrate()
        space = {"lr": {"low": 1e-4, "high": 0.1, "log": True},
                 "hidden_sizes": {"values": [[32, 32], [64, 64], [128, 128], [64, 64, 64]]},
                 "activation": {"values": ["relu", "tanh", "sigmoid"]},
                 "dropout": {"low": 0.0, "high": 0.5}}
        sweep = store.create_sweep(
            name="thousand", model="mlp", dataset="digits", hyperparameters={"epochs": 9},
            space=space, method="random", objective_metric="val_accuracy", objective_goal="max",
            max_trials=1000, max_concurrent=8,
            early_stopping={"method": "asha", "min_epochs": 1, "reduction_factor": 3},
            seed=0, device="cpu", priority=0)
        best, best_value = None, -1.0
        for n in range(1000):
            hp = {"epochs": 9, "lr": 10 ** rng.uniform(-4, -1),
                  "hidden_sizes": rng.choice(space["hidden_sizes"]["values"]),
                  "activation": rng.choice(space["activation"]["values"]),
                  "dropout": round(rng.uniform(0, 0.5), 3)}
            job = store.create_job("mlp", "digits", hp, device="cpu", name=f"thousand-t{n}",
                                   sweep_id=sweep.id, trial=n)
            store.claim_job(job.id, "synthetic")
            quality = 1 - abs(math.log10(hp["lr"]) + 2.3) / 3
            last = 9 if n % 4 == 0 else (1 if n % 4 == 1 else 3)
            points = [("val_accuracy", e * 10, e, quality * (1 - math.exp(-e / 2)), None)
                      for e in range(1, last + 1)]
            store.add_metrics(job.id, points)
            store.update_progress(job.id, last, 9, last * 10, 90, 0.0)
            store.finish_job(job.id, "succeeded" if last == 9 else "pruned")
            if last == 9 and points[-1][3] > best_value:
                best, best_value = job.id, points[-1][3]
        store.finish_sweep(sweep.id, "succeeded")
        return sweep.id, best
    finally:
        store.close()


def test_sweep_page_of_a_thousand_trials(browser, tmp_path):  # noqa: F811
    """1,000 finished trials: the page makes its few requests (no request per trial) and
    draws the table and every chart; how long that takes is printed."""
    sweep_id, best = _fill_thousand_trials(tmp_path)
    big = LocalService.embedded(tmp_path)
    try:
        big.wait_healthy()
        tab = Page(browser, big)
        page = tab.open("#/sweeps")  # which fetches plotly.js while it idles
        wait_js(page, "window.Plotly !== undefined", timeout=30_000)
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        timings = []
        for _ in range(2):
            page.goto(tab.base + "#/sweeps")
            # The page's own content, ready: the view of the page left behind may still say
            # "ready" until the hashchange has been handled.
            page.wait_for_selector(f'#view[data-state=ready] #sweeps tr[data-sweep-id="{sweep_id}"]')
            started = time.perf_counter()
            page.click(f'#sweeps tr[data-sweep-id="{sweep_id}"] .job-name')
            page.wait_for_selector("#view[data-state=ready] #sweep-trials tbody tr",
                                   timeout=30_000)
            timings.append(time.perf_counter() - started)
        # A hundred rows at a time (a thousand-row table takes the browser half a second to
        # lay out), sorted over all of them.
        assert page.locator("#sweep-trials tbody tr").count() == 100
        assert page.inner_text("#trials-pager-text") == "1–100 of 1,000 trials"
        assert traces_drawn(page, "#sweep-curves") >= 2  # grouped by status: one path each
        assert traces_drawn(page, "#sweep-parallel") >= 2
        page.wait_for_selector("section[data-state=ready] > #sweep-importance g.trace.bars")
        page.click("#sweep-trials th[data-column=objective] button")
        assert rows_in_order(page)[0] == best
        page.click("#trials-next")
        assert page.inner_text("#trials-pager-text") == "101–200 of 1,000 trials"
        page.select_option("#trials-page-size", "1000")
        assert page.locator("#sweep-trials tbody tr").count() == 1000
        assert page.locator("#sweep-trials tbody tr.row-pruned").count() == 750
        assert rows_in_order(page)[0] == best
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        api_calls = [u for u in requests if "/static/" not in u and not u.endswith("/")]
        per_trial = [u for u in api_calls if re.search(r"/jobs/\d+", u)]
        assert per_trial == []
        series_calls = [u for u in api_calls if "/compare/series" in u]
        assert len(series_calls) == 2, series_calls  # one per opening
        print(f"\nsweep page with 1,000 trials ready in {min(timings):.2f} s "
              f"(opened twice: {', '.join(f'{t:.2f}' for t in timings)} s)")
        tab.shot("sweep-page-1000-trials")
        tab.close()
    finally:
        big.stop()
