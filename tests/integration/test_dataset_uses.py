"""Sweeps and forks on an uploaded image dataset (SQLite and Postgres): a sweep is pinned to
the version it named when it was created, its trials are sized by that version's shape and
train on it; a fork of a job trained on an upload fits its parent's checkpoint."""

from __future__ import annotations

from core.settings import Settings
from tests.integration.dataset_files import digits_zip, upload
from worker.runner import JobRunner

TINY = {"epochs": 1, "steps_per_epoch": 2, "channels": [4, 8]}


def test_a_sweep_on_an_upload_is_pinned_to_its_version(big_client, store, tmp_path):
    client = big_client
    assert upload(client, "mine", digits_zip(), "digits.zip").status_code == 201
    made = client.post("/sweeps", json={
        "model": "cnn", "dataset": "mine", "method": "grid", "hyperparameters": TINY,
        "space": {"lr": {"values": [0.01, 0.003]}}, "max_concurrent": 1,
        "objective": {"metric": "val_accuracy", "goal": "max"}})
    assert made.status_code == 201, made.text
    # a second version uploaded while the sweep runs changes nothing for its trials
    assert upload(client, "mine", digits_zip(), "digits.zip").json()["version"] == 2
    sweep = client.get(f"/sweeps/{made.json()['id']}").json()
    assert sweep["dataset"] == "mine@1"
    [trial] = [t for t in sweep["trials"] if t["status"] == "queued"]
    job = store.get_job(trial["job_id"])
    assert job.dataset == "mine@1" and job.memory_bytes is not None
    # sized as POST /jobs sizes the same job: the version's images counted on the device too
    alone = client.post("/jobs", json={"model": "cnn", "dataset": "mine@1", "device": "cpu",
                                       "hyperparameters": job.hyperparameters}).json()
    assert alone["memory_bytes"] == job.memory_bytes > 1797 * (8 * 8 * 4 + 8)
    client.post(f"/jobs/{alone['id']}/cancel")
    runner = JobRunner(store, Settings(home=tmp_path / "w", metrics_flush_seconds=0.05),
                       worker_name="w")
    assert runner.run(job.id) == "succeeded", store.get_job(job.id).error


def test_a_fork_of_a_job_on_an_upload_fits_its_parent(big_client, store, tmp_path):
    client = big_client
    assert upload(client, "mine", digits_zip(), "digits.zip").status_code == 201
    parent = client.post("/jobs", json={"model": "cnn", "dataset": "mine", "device": "cpu",
                                        "hyperparameters": TINY}).json()
    runner = JobRunner(store, Settings(home=tmp_path / "w", metrics_flush_seconds=0.05),
                       worker_name="w")
    assert runner.run(parent["id"]) == "succeeded"
    fork = client.post("/jobs", json={"model": "cnn", "dataset": "mine@1", "device": "cpu",
                                      "hyperparameters": {"lr": 1e-3},
                                      "from_checkpoint": {"job": parent["id"]}})
    assert fork.status_code == 201, fork.text
    assert runner.run(fork.json()["id"]) == "succeeded"


def test_a_model_trained_on_an_upload_predicts_and_is_looked_inside(big_client, store,
                                                                     tmp_path):
    """Its validation images come from the upload (fetched into the API machine's dataset
    cache), the same images the worker validated on."""
    client = big_client
    assert upload(client, "mine", digits_zip(), "digits.zip").status_code == 201
    job = client.post("/jobs", json={"model": "cnn", "dataset": "mine", "device": "cpu",
                                     "hyperparameters": {**TINY, "steps_per_epoch": 20}}).json()
    runner = JobRunner(store, Settings(home=tmp_path / "w", metrics_flush_seconds=0.05),
                       worker_name="w")
    assert runner.run(job["id"]) == "succeeded"
    mistakes = client.get(f"/jobs/{job['id']}/inspect/mistakes")
    assert mistakes.status_code == 200, mistakes.text
    found = mistakes.json()
    [checkpoint] = store.list_checkpoints(job["id"])
    wrong = round(found["validation_size"] * (1 - checkpoint.metrics["val_accuracy"]))
    assert found["validation_size"] == 359 and abs(found["wrong"] - wrong) <= 1
    maps = client.get(f"/jobs/{job['id']}/inspect/feature-maps", params={"index": 3})
    assert maps.status_code == 200 and len(maps.json()["image"][0]) == 8
    predicted = client.post(f"/jobs/{job['id']}/predict",
                            json={"inputs": [maps.json()["image"]]})
    assert predicted.status_code == 200
    assert predicted.json()["predictions"][0]["label"] == maps.json()["predicted"]
