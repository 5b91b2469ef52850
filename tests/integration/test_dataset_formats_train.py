"""Each image format, uploaded over HTTP and trained on by a real worker run (SQLite and
Postgres): the digits as MNIST IDX files and as an .npz reach the accuracy the built-in digits
reach with the same job (within 2 points; the ImageFolder zip is
tests/integration/test_dataset_worker_cache.py's), and as CIFAR-10 batches (upscaled to 32 x 32
RGB, another network's geometry) at least 85 %. What each format's
conversion keeps exactly is tests/unit/test_ingest_formats.py's."""

from __future__ import annotations

import functools
import gzip
import io
import struct
import tarfile

import numpy as np
import pytest

from core.settings import Settings
from models.data import load_image_dataset
from models.train import JobSpec, fit
from tests.integration.dataset_files import upload
from worker.runner import JobRunner

CNN = {"epochs": 3, "lr": 0.003, "seed": 0}


@functools.cache
def builtin_accuracy() -> float:
    return fit(JobSpec("cnn", "digits", CNN, "cpu")).final_metrics["val_accuracy"]


def _digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits in their original order as uint8 0..255 (N, 8, 8) and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.round(digits.images * 255 / 16).astype(np.uint8), digits.target.astype(np.uint8)


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def idx_archive() -> bytes:
    x, y = _digits_uint8()

    def idx(array: np.ndarray) -> bytes:
        head = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(
            f">{array.ndim}I", *array.shape)
        return gzip.compress(head + array.tobytes(), mtime=0)

    return _tar({"train-images-idx3-ubyte.gz": idx(x), "train-labels-idx1-ubyte.gz": idx(y)})


def cifar_archive() -> bytes:
    x, y = _digits_uint8()
    big = np.kron(x, np.ones((1, 4, 4), np.uint8))  # (N, 32, 32): each pixel a 4x4 block
    rgb = np.repeat(big[:, None], 3, axis=1)  # (N, 3, 32, 32)
    records = np.concatenate([y[:, None], rgb.reshape(len(y), -1)], axis=1).astype(np.uint8)
    return _tar({"cifar-10-batches-bin/data_batch_1.bin": records.tobytes()})


def npz_archive() -> bytes:
    x, y = _digits_uint8()
    out = io.BytesIO()
    np.savez(out, x=x, y=y.astype(np.int64))
    return out.getvalue()


FORMATS = {"idx": (idx_archive, "digits-idx.tar.gz", (1, 8, 8)),
           "cifar10": (cifar_archive, "digits-cifar.tar.gz", (3, 32, 32)),
           "npz": (npz_archive, "digits.npz", (1, 8, 8))}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_trains_as_the_builtin_digits(big_client, store, tmp_path, fmt):
    make, filename, shape = FORMATS[fmt]
    answer = upload(big_client, f"digits-{fmt}", make(), filename)
    assert answer.status_code == 201, answer.text
    summary = answer.json()["summary"]
    assert summary["format"] == fmt and summary["examples"] == 1797
    assert (summary["channels"], summary["height"], summary["width"]) == shape
    job = big_client.post("/jobs", json={"model": "cnn", "dataset": f"digits-{fmt}",
                                         "device": "cpu", "hyperparameters": CNN}).json()
    runner = JobRunner(store, Settings(home=tmp_path / "w", metrics_flush_seconds=0.05),
                       worker_name="w")
    assert runner.run(job["id"]) == "succeeded", store.get_job(job["id"]).error
    accuracy = store.metric_summaries([job["id"]])[job["id"]]["val_accuracy"]["final"]
    assert accuracy >= 0.85, accuracy
    if shape == (1, 8, 8):  # the very images of the built-in digits, split by the same seed
        assert abs(accuracy - builtin_accuracy()) <= 0.02, (accuracy, builtin_accuracy())
    assert load_image_dataset("digits").x_val.shape[0] == 359  # the split both use
