"""`trainyard datasets` against `trainyard up` (real API, worker and broker processes on
SQLite): a folder of class folders is uploaded (archived on the fly), a job trains on it, its
versions and jobs are shown, and a used version is deleted only when forced."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from trainyard.client import Client

pytestmark = pytest.mark.e2e


def test_upload_a_folder_train_on_it_show_and_delete(embedded_service, tmp_path):
    from sklearn.datasets import load_digits

    service = embedded_service
    digits = load_digits()
    folder = tmp_path / "handwriting"
    for i, (image, label) in enumerate(zip(digits.images[:600], digits.target[:600])):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(image * 255 / 16).astype(np.uint8)).save(
            folder / str(label) / f"{i}.png")

    uploaded = service.cli("datasets", "--upload", "handwriting", str(folder))
    assert uploaded.returncode == 0, uploaded.stderr
    assert "handwriting@1 stored" in uploaded.stdout
    assert "600 images, 10 classes, 1 x 8 x 8" in uploaded.stdout
    listed = service.cli("datasets")
    assert "handwriting@1" in listed.stdout and "digits" in listed.stdout

    with Client(service.url) as client:
        job = client.submit("cnn", "handwriting", {"epochs": 1, "steps_per_epoch": 3},
                            device="cpu")
        done = client.wait(job["id"], timeout=240)
        assert done["status"] == "succeeded", done.get("error")
        assert done["dataset_version"] == 1 and len(done["dataset_sha256"]) == 64

    shown = service.cli("datasets", "--show", "handwriting")
    assert f"jobs: {job['id']}" in shown.stdout
    refused = service.cli("datasets", "--delete", "handwriting@1")
    assert refused.returncode == 2 and "409" in refused.stderr
    forced = service.cli("datasets", "--delete", "handwriting@1", "--force")
    assert forced.returncode == 0 and "deleted handwriting@1" in forced.stdout
    missing = service.cli("datasets", "--upload", "x", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
