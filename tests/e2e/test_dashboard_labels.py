"""User text in plotly's labels, in a real browser: plotly reads names as a
pseudo-HTML subset and decodes only some entities, so a run's name must be escaped in a way it
decodes back to the very characters, with no markup taking effect.

Uses the browser, the `trainyard up` service and the strict Page (fails on any JavaScript
error or dialog) of test_dashboard.py.
"""

from __future__ import annotations

import pytest
from test_dashboard import SMALL, Page, traces_drawn, wait_js
from test_dashboard import browser as browser  # noqa: F401 - fixtures of this module too
from test_dashboard import service as service  # noqa: F401

pytestmark = pytest.mark.e2e

NAMES = ('say "hi" <b>x</b> & <img src=x onerror=alert(1)>',
         "it's 'quoted' &amp; &quot;named&quot; &#60;i&#62;")


def test_run_names_show_literally_in_chart_legends_and_hovers(browser, service):
    from db.store import Store

    # Two finished runs with the same settings, written straight to the service's database:
    # nothing differs, so the compare page names each run by its name.
    store = Store(f"sqlite:///{service.home / 'trainyard.db'}")
    ids = []
    try:
        for name in NAMES:
            job = store.create_job("mlp", "digits", SMALL, device="cpu", name=name)
            store.claim_job(job.id, "synthetic")
            store.add_metrics(job.id, [("train_loss", step, 1, 2.0 / step, None)
                                       for step in range(1, 21)]
                              + [("val_accuracy", 20, 1, 0.5 + 0.1 * len(ids), None)])
            store.finish_job(job.id, "succeeded")
            ids.append(job.id)
    finally:
        store.close()

    tab = Page(browser, service)
    page = tab.open(f"#/compare?ids={ids[0]},{ids[1]}")
    for chart in ("#compare-chart-a", "#compare-chart-b", "#compare-scatter"):
        wait_js(page, f"document.querySelector('{chart} g.trace') !== null")
    expected = [f"#{job_id} {name}" for job_id, name in zip(ids, NAMES, strict=True)]
    for chart in ("#compare-chart-a", "#compare-chart-b"):
        assert traces_drawn(page, chart) == 2
        legend = page.eval_on_selector_all(f"{chart} .legendtext",
                                           "els => els.map(e => e.textContent)")
        assert legend == expected, chart
    # No markup took effect: no element made from the names, no bold or italic text.
    assert page.locator("img, #view b, #view i, .legendtext tspan[style]").count() == 0

    # The scatter's hover label says the same.
    point = page.locator("#compare-scatter g.trace path.point").first
    point.scroll_into_view_if_needed()
    box = point.bounding_box()  # plotly's drag layer lies over the point: move the mouse there
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    wait_js(page, "document.querySelector('#compare-scatter .hoverlayer .hovertext') !== null")
    hover = page.eval_on_selector("#compare-scatter .hoverlayer .hovertext",
                                  "el => el.textContent")
    assert any(hover.startswith(label) for label in expected), hover
    tab.close()  # fails on any JavaScript error or dialog (an alert included)
