"""The job page's "Inside the model" and "Try it" panels in a real browser, on real runs.

Three tiny jobs (a CNN, an MLP, a character RNN-LM) are submitted to the `trainyard up`
service of test_dashboard.py and trained by its worker; the pages are then driven like a
person would: the checkpoint slider, the validation image number, a digit drawn with the
mouse, a prompt typed and generated from. Screenshots go to tests/artifacts/screenshots/.
"""

from __future__ import annotations

import re

import pytest
from test_dashboard import PHONE, SHOTS, Page, wait_js
from test_dashboard import browser as browser  # noqa: F401 - fixtures of this module too
from test_dashboard import service as service  # noqa: F401

pytestmark = pytest.mark.e2e

JOBS = {
    "cnn": {"model": "cnn", "dataset": "digits", "name": "tiny cnn",
            "hyperparameters": {"epochs": 3, "channels": [8, 16], "seed": 1}},
    "mlp": {"model": "mlp", "dataset": "digits", "name": "tiny mlp",
            "hyperparameters": {"epochs": 2, "hidden_sizes": [32, 32], "seed": 1}},
    "lm": {"model": "rnn_lm", "dataset": "fortunes", "name": "tiny lm",
           "hyperparameters": {"epochs": 2, "steps_per_epoch": 20, "hidden_size": 64,
                               "embedding_dim": 16, "seq_len": 32, "seed": 1}},
}


@pytest.fixture(scope="module")
def jobs(service):  # noqa: F811
    """The three jobs, submitted at once so that the worker trains them while the CNN page is
    watched live; each test waits for the one it needs."""
    ids = {}
    for key, body in JOBS.items():
        response = service.http.post("/jobs", json=body)
        assert response.status_code == 201, response.text
        ids[key] = response.json()["id"]
    return ids


def finished(service, job_id: int) -> None:
    job = service.wait_status(job_id, {"succeeded", "failed"}, timeout=180)
    assert job["status"] == "succeeded"


def count(page, selector: str) -> int:
    return page.locator(selector).count()


def panel_ready(page, panel: str, timeout: float = 30_000) -> None:
    page.wait_for_selector(f"{panel}[data-state=ready]", timeout=timeout)


def element_shot(page, selector: str, name: str) -> None:
    page.locator(selector).screenshot(path=str(SHOTS / f"{name}.png"))


def test_cnn_page_filters_maps_confusion_mistakes_slider_and_drawing(
        browser, service, jobs):  # noqa: F811
    job_id = jobs["cnn"]
    tab = Page(browser, service)
    page = tab.open(f"#/jobs/{job_id}")
    # Opened as the job starts: until its first checkpoint the area says when panels come.
    page.wait_for_selector("#inside-empty:not([hidden]), #inside-filters[data-state=ready]",
                           timeout=60_000)
    if page.is_visible("#inside-empty"):
        assert "after the job's first epoch" in page.inner_text("#inside-empty")
    # The confusion matrix follows the epochs live, with no reload, to the last one.
    finished(service, job_id)
    page.wait_for_selector("#view[data-status=succeeded]", timeout=30_000)
    wait_js(page, "document.querySelector('#inside-confusion-chart')?.dataset.epoch === '3'")
    assert page.get_attribute("#confusion-epoch", "max") == "2"
    assert page.inner_text("#confusion-label").startswith("epoch 3 · ")
    # the heatmap: rows = true label, columns = predicted, each cell's count written in it
    confusion = service.http.get(f"/jobs/{job_id}/confusion").json()
    assert count(page, "#inside-confusion-chart g.heatmaplayer image") == 1
    cells = page.eval_on_selector_all("#inside-confusion-chart g.heatmap-label text",
                                      "els => els.map(e => Number(e.textContent))")
    assert cells == [n for row in confusion["matrix"] for n in row]
    right = f"{confusion['correct']} of {confusion['total']} right"
    assert right in page.inner_text("#confusion-label")
    page.fill("#confusion-epoch", "0")
    wait_js(page, "document.querySelector('#inside-confusion-chart').dataset.epoch === '1'")

    checkpoints = service.http.get(f"/jobs/{job_id}/checkpoints").json()
    panel_ready(page, "#inside-filters")
    filters = service.http.get(f"/jobs/{job_id}/inspect/filters").json()
    assert filters["shape"][0] == 8
    assert count(page, "#inside-filter-grid canvas") == filters["shape"][0]
    # The slider starts on the checkpoint the API picks by default (the best val_accuracy).
    assert page.get_attribute("#job-inside", "data-checkpoint") == str(filters["checkpoint"])
    assert f"epoch {filters['epoch']} · " in page.inner_text("#inside-epoch")

    panel_ready(page, "#inside-feature-maps")
    maps = service.http.get(f"/jobs/{job_id}/inspect/feature-maps?index=5").json()
    page.fill("#inside-image-index", "5")
    page.press("#inside-image-index", "Enter")
    wait_js(page, "document.querySelector('.fmap-input figcaption')?.textContent.startsWith('#5 ')")
    panel_ready(page, "#inside-feature-maps")
    shown = sum(len(b["maps"]) for b in maps["blocks"])
    assert count(page, "#inside-feature-maps canvas.fmap") == shown >= 8 + 16
    assert f"label {maps['label']}, predicted {maps['predicted']}" in page.inner_text(".fmap-input")

    panel_ready(page, "#inside-mistakes")
    assert count(page, "#inside-mistake-grid figure canvas") == 16
    caption = page.inner_text("#inside-mistake-grid figure:first-child figcaption")
    assert re.fullmatch(r"true \d → predicted \d \(\d+%\)", caption), caption
    tab.shot("job-inside-cnn")

    # Drawing a stroke: the network answers with a label and a bar per class.
    page.locator("#tryit").scroll_into_view_if_needed()
    box = page.locator("#tryit-canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    for i in range(1, 11):  # a "1": one stroke top to bottom
        page.mouse.move(box["x"] + box["width"] * 0.52,
                        box["y"] + box["height"] * (0.15 + 0.07 * i))
    page.mouse.up()
    page.wait_for_selector("#tryit-bars .prob-row")
    assert count(page, "#tryit-bars .prob-row") == 10
    label = page.inner_text("#tryit-label")
    assert label in [str(d) for d in range(10)]
    assert page.get_attribute("#tryit-bars .prob-top", "data-label") == label
    answered = f"checkpoint {filters['checkpoint']}, epoch {filters['epoch']}"
    assert answered in page.inner_text("#tryit-meta")
    element_shot(page, "#tryit", "job-tryit-digit")

    # The slider picks the first epoch's checkpoint: the label and every panel follow.
    page.fill("#inside-checkpoint", "0")
    assert page.inner_text("#inside-epoch").startswith("epoch 1 · ")
    assert page.get_attribute("#job-inside", "data-checkpoint") == str(checkpoints[0]["id"])
    wait_js(page, "document.querySelector('#inside-filters-caption').textContent"
                  ".includes('at epoch 1')")
    wait_js(page, "document.querySelector('#tryit-meta').textContent.includes('epoch 1')")
    page.click("#tryit-clear")
    assert count(page, "#tryit-bars .prob-row") == 0 and page.inner_text("#tryit-label") == "–"
    tab.close()

    phone = Page(browser, service, PHONE)
    page = phone.open(f"#/jobs/{job_id}")
    panel_ready(page, "#inside-mistakes")
    panel_ready(page, "#inside-feature-maps")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.shot("job-inside-cnn-390")
    phone.close()


def test_mlp_page_shows_units_as_images(browser, service, jobs):  # noqa: F811
    job_id = jobs["mlp"]
    finished(service, job_id)
    tab = Page(browser, service)
    page = tab.open(f"#/jobs/{job_id}")
    panel_ready(page, "#inside-units")
    units = service.http.get(f"/jobs/{job_id}/inspect/units?limit=64").json()
    assert units["total_units"] == 32
    assert count(page, "#inside-unit-grid canvas") == 32
    assert "32 of 32 units" in page.inner_text("#inside-units-caption")
    panel_ready(page, "#inside-mistakes")
    wait_js(page, "document.querySelector('#inside-confusion-chart')?.dataset.epoch === '2'")
    # The CNN's panels are not an MLP's, nor the language model's.
    assert count(page, "#inside-filters, #inside-feature-maps, #inside-embeddings, #gen-form") == 0
    assert page.is_visible("#tryit-canvas")
    tab.shot("job-inside-mlp")
    tab.close()


def test_language_model_page_embeddings_neighbours_next_token_and_generate(
        browser, service, jobs):  # noqa: F811
    job_id = jobs["lm"]
    finished(service, job_id)
    tab = Page(browser, service)
    page = tab.open(f"#/jobs/{job_id}")
    panel_ready(page, "#inside-embeddings")
    wait_js(page, "document.querySelector('#inside-embeddings-chart g.trace') !== null")
    vocab = service.http.get(f"/jobs/{job_id}/inspect/embeddings?limit=300").json()
    assert count(page, "#inside-embeddings-chart g.trace .textpoint") == len(vocab["points"]) > 30
    assert "(PCA)" in page.inner_text("#inside-embeddings-caption")
    page.select_option("#inside-embed-method", "tsne")
    wait_js(page, "document.querySelector('#inside-embeddings-caption').textContent"
                  ".includes('t-SNE')",
            timeout=30_000)

    # Nearest neighbours of a token; one the vocabulary lacks is a 422 shown in the panel.
    page.fill("#inside-neighbour-token", "a")
    page.press("#inside-neighbour-token", "Enter")
    wait_js(page, "document.querySelectorAll('#inside-neighbours-table tbody tr').length === 10")
    panel_ready(page, "#inside-neighbours")
    page.fill("#inside-neighbour-token", "☃")
    page.click("#inside-neighbour-form button")
    page.wait_for_selector("#inside-neighbours[data-state=error] .panel-error")
    assert "token" in page.inner_text("#inside-neighbours .panel-error")
    page.fill("#inside-neighbour-token", "e")
    page.press("#inside-neighbour-token", "Enter")
    panel_ready(page, "#inside-neighbours")

    panel_ready(page, "#inside-next-token")
    wait_js(page, "document.querySelectorAll('#inside-next-chart g.trace.bars path').length === 20")

    # Generate: the prompt and the continuation told apart, unknown characters listed.
    page.fill("#gen-prompt", "The ☃ ")
    page.fill("#gen-max", "60")
    page.fill("#gen-seed", "3")
    page.click("#gen-button")
    page.wait_for_selector("#gen-output:not([hidden]) .gen-new")
    answer = service.http.post(f"/jobs/{job_id}/generate", json={
        "prompt": "The ☃ ", "max_tokens": 60, "seed": 3, "temperature": 0.8}).json()
    assert page.inner_text("#gen-output .gen-new") == answer["continuation"] != ""
    assert page.inner_text("#gen-output .gen-given").startswith("The")
    assert '"☃"' in page.inner_text("#gen-unknown")
    assert "60 tokens · seed 3" in page.inner_text("#gen-meta")
    tab.shot("job-inside-lm")
    element_shot(page, "#tryit", "job-tryit-generate")
    # A value the API refuses comes back as text in the panel, not as a thrown error.
    page.fill("#gen-temp", "5")
    page.click("#gen-button")
    page.wait_for_selector("#tryit[data-state=error] .panel-error")
    assert "temperature" in page.inner_text("#tryit .panel-error")
    tab.close()


def test_a_job_without_checkpoints_says_when_the_panels_come(browser, service):  # noqa: F811
    job = service.http.post("/jobs", json={**JOBS["mlp"], "name": "cancelled at once"}).json()
    service.http.post(f"/jobs/{job['id']}/cancel")
    record = service.wait_status(job["id"], {"cancelled", "succeeded", "failed"}, timeout=60)
    if service.http.get(f"/jobs/{job['id']}/checkpoints").json():
        pytest.skip(f"the worker saved a checkpoint before the cancel ({record['status']})")
    tab = Page(browser, service)
    page = tab.open(f"#/jobs/{job['id']}")
    page.wait_for_selector("#inside-empty:not([hidden])")
    assert "no checkpoint" in page.inner_text("#inside-empty")
    assert page.is_hidden("#inside-checkpoint") and page.is_hidden("#tryit")
    tab.close()
