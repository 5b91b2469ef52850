"""The usage page and a finished job's Delete button in a real browser (Debian's chromium
through Playwright) against its own `trainyard up`: the usage page shows what the user stores,
the Delete button appears only once the job finished, asks first, keeps the job on "Keep",
and on "Yes, delete" deletes it and goes to the jobs list. Screenshots: usage.png,
job-delete.png in tests/artifacts/screenshots/."""

from __future__ import annotations

import pytest
from test_dashboard import SHOTS, Page, wait_js
from test_dashboard import browser as browser  # noqa: F401 - fixtures of this module too
from test_dashboard import service as service  # noqa: F401

from trainyard.client import Client

pytestmark = pytest.mark.e2e

SMALL = {"epochs": 1, "hidden_sizes": [16, 16], "seed": 1}


@pytest.fixture(scope="module")
def runs(service):  # noqa: F811 - the imported fixture
    with Client(service.url) as client:
        jobs = [client.submit("mlp", "digits", {**SMALL, "lr": lr}, device="cpu")
                for lr in (0.01, 0.05)]
        done = [client.wait(job["id"], timeout=240) for job in jobs]
        assert [d["status"] for d in done] == ["succeeded", "succeeded"]
        yield client, done


def test_usage_page_shows_what_the_user_stores(browser, service, runs):  # noqa: F811
    client, _ = runs
    expected = client.usage()["users"][0]
    tab = Page(browser, service)
    page = tab.open("#/usage")
    row = page.locator('#usage tr[data-owner="local"]')
    assert row.locator('[data-label="jobs"]').inner_text() == "2"
    assert "succeeded 2" in row.locator('[data-label="by status"]').inner_text()
    points = row.locator('[data-label="metric points"]').inner_text().replace(",", "")
    assert int(points) == expected["metric_points"] > 0
    assert row.locator('[data-label="checkpoints"]').inner_text() == str(expected["checkpoints"])
    assert "Database file" in page.inner_text("#usage-note")
    assert page.locator('a[data-nav="usage"]').get_attribute("class") == "active"
    tab.shot("usage")
    tab.close()


def test_delete_button_asks_then_deletes_and_goes_to_the_jobs_list(browser, service,  # noqa: F811
                                                                    runs):
    client, done = runs
    keep, gone = done
    tab = Page(browser, service)
    page = tab.open(f"#/jobs/{gone['id']}")
    page.wait_for_selector("#delete-job:not([hidden])")
    page.click("#delete-job")
    assert page.is_visible("#delete-job-confirm")
    page.click("#delete-job-no")  # kept
    assert client.job(gone["id"])["status"] == "succeeded"
    page.click("#delete-job")
    assert "cannot be undone" in page.inner_text("#delete-job-confirm")
    page.screenshot(path=str(SHOTS / "job-delete.png"))  # the viewport: the question shows
    page.click("#delete-job-yes")
    wait_js(page, "window.location.hash === '#/'")
    tab.ready()
    page.wait_for_selector(f'#jobs a[href="#/jobs/{keep["id"]}"]')
    assert page.locator(f'#jobs a[href="#/jobs/{gone["id"]}"]').count() == 0
    assert client.jobs()["total"] == 1
    assert [j["id"] for j in client.jobs()["items"]] == [keep["id"]]
    tab.close()
