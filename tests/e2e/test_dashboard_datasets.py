"""The datasets pages in a real browser, against the `trainyard up` service of test_dashboard.py.

A person's path through them: an ImageFolder zip of scikit-learn's digits (8x8 PNGs in class
folders 0..9, built here) uploaded through the page's form with the network slowed, so that
the progress bar is seen moving to 100 %; what the server found; the dataset's page (a row of
sample images per class, the class histogram); a second version; a text upload with its sample
and vocabulary; a bad archive refused with the member named; the New job form offering each
upload to the models it fits; a version a job used that cannot be deleted. Screenshots go to
tests/artifacts/screenshots/.
"""

from __future__ import annotations

import io
import re
import zipfile

import pytest
from test_dashboard import PHONE, SHOTS, Page, wait_js
from test_dashboard import browser as browser  # noqa: F401 - fixtures of this module too
from test_dashboard import service as service  # noqa: F401

pytestmark = pytest.mark.e2e

IMAGES = "digits-folder"
TEXT = "sea-notes"
TEXT_BODY = "".join(
    f"Line {i}: the tide comes in, the tide goes out.\n"
    f"  Gulls count the waves ({i * 7} of them) and forget.\n\n" for i in range(60))


def png(pixels) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def digits_zip(path, *, split_val: bool = False) -> int:
    """The digits as <class>/<n>.png (or train/ and val/ folders, every fifth image in val).
    Returns how many images it holds."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for n, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
            pixels = (image * 255 / 16).astype(np.uint8)
            top = ("val/" if n % 5 == 0 else "train/") if split_val else ""
            archive.writestr(f"{top}{label}/{n:04d}.png", png(pixels))
    return len(digits.images)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import numpy as np

    folder = tmp_path_factory.mktemp("uploads")
    paths = {"v1": folder / "digits.zip", "v2": folder / "digits-split.zip",
             "text": folder / "sea.txt", "evil": folder / "evil.zip"}
    count = digits_zip(paths["v1"])
    digits_zip(paths["v2"], split_val=True)
    paths["text"].write_text(TEXT_BODY, encoding="utf-8")
    with zipfile.ZipFile(paths["evil"], "w") as archive:
        good = png(np.zeros((8, 8), np.uint8))
        for label in ("0", "1"):
            archive.writestr(f"{label}/a.png", good)
        archive.writestr("../evil.png", good)
    return {"paths": paths, "count": count}


def upload(page, name: str, path, kind: str = "auto") -> None:
    page.fill("#upload-name", name)
    page.set_input_files("#upload-file", str(path))
    page.select_option("#upload-kind", kind)
    page.click("#upload-submit")


def uploaded(page, ref: str, timeout: float = 60_000) -> str:
    """Wait for the form's answer about `ref`; return its text."""
    page.wait_for_selector(f"#upload-result:not([hidden]) h3:has-text('Stored {ref}')", timeout=timeout)
    return page.inner_text("#upload-result")


def record_progress(page) -> None:
    """Keep every value the upload's progress bar shows, from here (page.evaluate is CDP's,
    not eval() in the page, which the CSP refuses)."""
    page.evaluate("""() => {
        window.seenProgress = [];
        const watch = new MutationObserver(() => {
            const bar = document.querySelector('#upload-progress .bar');
            if (bar) window.seenProgress.push(Number(bar.getAttribute('aria-valuenow')));
        });
        watch.observe(document.body, {subtree: true, attributes: true,
                                      attributeFilter: ['aria-valuenow']});
    }""")


def test_upload_images_with_progress_then_see_its_page(browser, service, files):
    tab = Page(browser, service)
    page = tab.open("#/datasets")
    assert page.locator("#datasets tr[data-dataset=digits][data-source=builtin]").count() == 1
    assert "No uploads yet" in page.inner_text("#datasets")

    # Slowed to ~200 KB/s, so the bar is seen part way before the server answers.
    cdp = tab.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                  "downloadThroughput": -1,
                                                  "uploadThroughput": 200_000})
    record_progress(page)
    upload(page, IMAGES, files["paths"]["v1"])
    wait_js(page, "(() => { const v = Number(document.querySelector('#upload-progress .bar')"
                  "?.getAttribute('aria-valuenow')); return v > 5 && v < 95; })()")
    assert "sending" in page.inner_text("#upload-progress-label")
    tab.shot("dataset-upload-progress")
    text = uploaded(page, f"{IMAGES}@1")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                  "downloadThroughput": -1, "uploadThroughput": -1})
    seen = page.evaluate("window.seenProgress")
    assert max(seen) == 100 and any(0 < v < 100 for v in seen), seen
    assert page.get_attribute("#upload-progress .bar", "aria-valuenow") == "100"
    assert page.get_attribute("#upload-progress", "data-phase") == "done"
    assert "10 classes" in text and f"{files['count']:,}" in text
    assert page.locator("#upload-result .class-table tbody tr").count() == 10
    assert "1 × 8 × 8" in text and "split by each job's seed" in text
    stored = service.http.get(f"/datasets/{IMAGES}").json()
    versions = stored["versions"] if isinstance(stored, dict) else stored
    assert versions[0]["sha256"] in text

    # The list shows it as soon as it is stored.
    row = page.locator(f"#datasets tr[data-dataset='{IMAGES}']")
    row.wait_for()
    assert re.search(rf"{IMAGES}@1 · 1 version\b", row.inner_text())
    cells = row.locator("td")
    assert cells.nth(2).inner_text() == "images" and cells.nth(5).inner_text() == "10"

    # Its page: a row of sample images per class, and the histogram of the classes.
    row.locator("a.dataset-name").click()
    tab.ready()
    page.wait_for_selector("#dataset-samples[data-state=ready]", timeout=20_000)
    assert page.locator(".sample-row").count() == 10
    assert page.locator(".sample-row canvas").count() == 80  # 8 of each class
    page.wait_for_selector("#dataset-histogram[data-state=ready]")
    assert page.locator("#dataset-histogram-chart g.trace.bars").count() == 1  # train only
    assert page.locator("#dataset-histogram-chart g.trace.bars g.point").count() == 10
    assert page.locator("#dataset-versions tbody tr").count() == 1
    tab.shot("dataset-page-images")
    tab.close()


def test_second_version_and_a_text_upload(browser, service, files):
    tab = Page(browser, service)
    page = tab.open("#/datasets")
    upload(page, IMAGES, files["paths"]["v2"])
    text = uploaded(page, f"{IMAGES}@2")
    assert "from the archive's val/ folder" in text
    row = page.locator(f"#datasets tr[data-dataset='{IMAGES}']")
    page.wait_for_selector(f"#datasets tr[data-dataset='{IMAGES}']:has-text('2 versions')")
    assert f"{IMAGES}@2" in row.inner_text()

    upload(page, TEXT, files["paths"]["text"])
    text = uploaded(page, f"{TEXT}@1")
    assert "vocabulary (char)" in text.lower() and TEXT_BODY[:40] in text
    page.wait_for_selector(f"#datasets tr[data-dataset='{TEXT}']")
    tab.shot("datasets-list")

    # The image dataset's page opens on the newest version: train and val bars now.
    page.goto(tab.base + f"#/datasets/{IMAGES}")
    tab.ready()
    assert page.get_attribute("#view", "data-version") == "2"
    assert page.locator("#dataset-versions tbody tr").count() == 2
    page.wait_for_selector("#dataset-histogram[data-state=ready]")
    assert page.locator("#dataset-histogram-chart g.trace.bars").count() == 2

    # The text's page: its opening as text (newlines kept) and a vocabulary size per tokenizer.
    page.goto(tab.base + f"#/datasets/{TEXT}")
    tab.ready()
    page.wait_for_selector("#dataset-text[data-state=ready]")
    sample = page.inner_text("#dataset-text-sample")
    assert sample.startswith(TEXT_BODY[:200])
    vocab = page.locator("#dataset-vocab tr")
    assert sorted(vocab.evaluate_all("rows => rows.map(r => r.dataset.tokenizer)")) == ["char", "word"]
    assert page.locator("#dataset-samples").count() == 0
    tab.shot("dataset-page-text")
    tab.close()


def test_bad_archive_is_refused_in_the_form(browser, service, files):
    tab = Page(browser, service)
    page = tab.open("#/datasets")
    upload(page, "evil", files["paths"]["evil"])
    page.wait_for_selector("#upload-error:not([hidden])", timeout=30_000)
    assert page.get_attribute("#upload-error", "data-status") == "422"
    assert "../evil.png" in page.inner_text("#upload-error")
    assert page.get_attribute("#upload-progress", "data-phase") == "failed"
    assert page.is_hidden("#upload-result")
    names = {d["name"] for d in service.http.get("/datasets").json()}
    assert "evil" not in names
    tab.shot("dataset-upload-error")
    tab.close()


def options(page) -> list[str]:
    return page.eval_on_selector_all("#dataset option", "els => els.map(e => e.value)")


def test_new_job_form_offers_the_uploads_that_fit(browser, service):
    tab = Page(browser, service)
    page = tab.open("#/new")
    page.select_option("#model", "cnn")
    wait_js(page, f"[...document.querySelectorAll('#dataset option')].some(o => o.value === '{IMAGES}@2')")
    offered = options(page)
    assert {"digits", IMAGES, f"{IMAGES}@2", f"{IMAGES}@1"} <= set(offered)
    assert TEXT not in offered
    page.select_option("#model", "rnn_lm")
    wait_js(page, f"[...document.querySelectorAll('#dataset option')].some(o => o.value === '{TEXT}')")
    offered = options(page)
    assert {TEXT, f"{TEXT}@1"} <= set(offered) and IMAGES not in offered
    tab.close()


def test_a_version_a_job_used_cannot_be_deleted(browser, service):
    made = service.http.post("/jobs", json={
        "model": "cnn", "dataset": f"{IMAGES}@1", "name": "on my digits",
        "hyperparameters": {"epochs": 1, "channels": [4, 8], "seed": 1}})
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]

    tab = Page(browser, service)
    page = tab.open(f"#/datasets/{IMAGES}?v=1")
    first = page.locator("#dataset-versions tr[data-version='1']")
    page.wait_for_selector(f"#dataset-versions tr[data-version='1'] a[href='#/jobs/{job_id}']")
    first.locator("button.delete-version").click()
    first.locator("button.confirm-yes").click()
    page.wait_for_selector("#versions-error:not([hidden])")
    assert page.get_attribute("#versions-error", "data-status") == "409"
    assert f"{IMAGES}@1 was not deleted" in page.inner_text("#versions-error")
    assert page.locator("#force-delete").count() == 1  # keyless local use is an admin
    assert page.locator("#dataset-versions tbody tr").count() == 2
    assert service.http.get(f"/datasets/{IMAGES}").status_code == 200

    # The job's page names the exact version it trains on, linked to it.
    page.goto(tab.base + f"#/jobs/{job_id}")
    tab.ready()
    assert page.inner_text("#job-dataset").startswith(f"{IMAGES}@1")
    tab.close()


def test_phone_width(browser, service):
    phone = Page(browser, service, PHONE)
    page = phone.open(f"#/datasets/{IMAGES}?v=1")
    page.wait_for_selector("#dataset-samples[data-state=ready]")
    page.wait_for_selector("#dataset-histogram[data-state=ready]")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.shot("dataset-page-images-390")
    page.goto(phone.base + "#/datasets")
    phone.ready()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.shot("datasets-390")
    phone.close()
    assert SHOTS.joinpath("datasets-390.png").exists()
