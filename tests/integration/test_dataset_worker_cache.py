"""A worker training on users' uploads (SQLite and Postgres): an ImageFolder of the digits
trains a CNN as well as the built-in digits do, each version is fetched into the worker's
cache once, checked by its sha256, and the cache stays within its bytes."""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import time
from pathlib import Path

import pytest

from core.settings import Settings
from db.store import Store
from ingest import IngestLimits, ingest
from models.train import JobSpec, fit
from tests.integration.dataset_files import CORPUS_A, digits_zip
from worker import dataset_cache
from worker.runner import JobRunner

# 3 epochs of the default CNN at lr 0.003: the built-in digits reach 94.4 % validation
# accuracy (seed 0), in seconds.
CNN = {"epochs": 3, "lr": 0.003, "seed": 0}


@functools.cache
def builtin_digits_accuracy() -> float:
    """The same job on the built-in digits, trained once for the session."""
    return fit(JobSpec("cnn", "digits", CNN, "cpu")).final_metrics["val_accuracy"]


def store_digits(store: Store, tmp_path: Path, owner: str = "local"):
    (tmp_path / "digits.zip").write_bytes(digits_zip())
    got = ingest(tmp_path / "digits.zip", "digits.zip", limits=IngestLimits(),
                 workdir=tmp_path / "ingest")
    with open(got.path, "rb") as fh:
        return store.add_dataset_version(owner, "mydigits", got.kind, fh, got.size,
                                         got.sha256, got.summary)


def submit(store: Store, record, hp: dict) -> int:
    return store.create_job(model="cnn", dataset=record.name, hyperparameters=hp,
                            device="cpu", dataset_version=record.version,
                            dataset_sha256=record.sha256, owner=record.owner).id


def test_a_cnn_on_uploaded_digits_trains_as_on_the_builtin_ones_and_fetches_once(
        store, tmp_path, caplog):
    record = store_digits(store, tmp_path)
    runner = JobRunner(store, Settings(home=tmp_path / "home", metrics_flush_seconds=0.05),
                       worker_name="w")
    caplog.set_level(logging.INFO, logger="worker.dataset_cache")
    first = submit(store, record, CNN)
    assert runner.run(first) == "succeeded"
    accuracy = store.metric_summaries([first])[first]["val_accuracy"]["final"]
    assert accuracy >= 0.9
    assert abs(accuracy - builtin_digits_accuracy()) <= 0.02
    assert f"dataset mydigits@1: fetched {record.size} bytes" in caplog.text

    caplog.clear()
    second = submit(store, record, {**CNN, "epochs": 1, "steps_per_epoch": 2})
    assert runner.run(second) == "succeeded"
    assert "dataset mydigits@1: from cache" in caplog.text and "fetched" not in caplog.text
    cached = tmp_path / "home" / "dataset-cache" / record.sha256
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == record.sha256


def test_ensure_fetches_once_checks_and_evicts_the_least_recently_used(store, tmp_path):
    home = tmp_path / "home"
    records = [store.add_dataset(f"t{i}", "text", (CORPUS_A * (i + 1)).encode())
               for i in range(3)]
    sizes = [r.size for r in records]
    got = dataset_cache.ensure(store, records[0], home, max_bytes=10**9)
    assert got.fetched and got.path.read_bytes() == (CORPUS_A).encode()
    assert not dataset_cache.ensure(store, records[0], home, max_bytes=10**9).fetched
    dataset_cache.ensure(store, records[1], home, max_bytes=10**9)
    # make t1 the older use, then touch t0: fetching t2 into room for two evicts t1
    os.utime(home / "dataset-cache" / records[1].sha256, (time.time() - 60,) * 2)
    dataset_cache.ensure(store, records[0], home, max_bytes=10**9)
    dataset_cache.ensure(store, records[2], home, max_bytes=sizes[0] + sizes[2])
    assert sorted(p.name for p in (home / "dataset-cache").iterdir()) == sorted(
        [records[0].sha256, records[2].sha256])


def test_bytes_that_do_not_match_their_sha256_are_not_cached(store, tmp_path):
    good = store.add_dataset("t", "text", CORPUS_A.encode())
    liar = type(good)(**{**good.to_dict(), "sha256": "0" * 64})
    with pytest.raises(ValueError, match="do not match"):
        dataset_cache.ensure(store, liar, tmp_path, max_bytes=10**9)
    assert list((tmp_path / "dataset-cache").iterdir()) == []


def test_a_job_trains_on_its_recorded_version_and_fails_plainly_once_it_is_gone(store, tmp_path):
    runner = JobRunner(store, Settings(home=tmp_path / "home", metrics_flush_seconds=0.05),
                       worker_name="w")
    first = store.add_dataset("novel", "text", CORPUS_A.encode())
    store.add_dataset("novel", "text", (CORPUS_A * 2).encode())
    hp = {"epochs": 1, "seq_len": 16, "hidden_size": 16, "embedding_dim": 8,
          "steps_per_epoch": 2}
    job = store.create_job(model="rnn_lm", dataset="novel", hyperparameters=hp, device="cpu",
                           dataset_version=1, dataset_sha256=first.sha256)
    assert runner.run(job.id) == "succeeded"
    cache = tmp_path / "home" / "dataset-cache"
    assert [p.name for p in cache.iterdir()] == [first.sha256]  # version 1, not the newest

    store.delete_dataset_version("local", "novel", 1, force=True)
    again = store.create_job(model="rnn_lm", dataset="novel", hyperparameters=hp, device="cpu",
                             dataset_version=1, dataset_sha256=first.sha256)
    assert runner.run(again.id) == "failed"
    assert "novel@1 no longer exists" in store.get_job(again.id).error


def test_chunks_are_4_mib_and_read_back_in_order(store):
    blob = os.urandom(9 * 2**20 + 5)
    record = store.add_dataset_version("local", "big", "images", io.BytesIO(blob), len(blob),
                                       hashlib.sha256(blob).hexdigest(), {})
    chunks = list(store.iter_dataset_chunks(record.id))
    assert [len(c) for c in chunks] == [4 * 2**20, 4 * 2**20, 2**20 + 5]
    assert b"".join(chunks) == blob
    with pytest.raises(ValueError):  # a source that is not what it claims: nothing stored
        store.add_dataset_version("local", "big", "images", io.BytesIO(blob[:-1]), len(blob),
                                  hashlib.sha256(blob).hexdigest(), {})
    assert [d.ref for d in store.list_datasets()] == ["big@1"]
