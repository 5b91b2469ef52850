"""GET /jobs/{id}/confusion on SQLite and Postgres: a job run by the real worker runner stores a
confusion matrix at each epoch's end, and the API serves every one, consistent with the
validation set and the val_accuracy stored for that epoch; bad epochs, language models, jobs
without a matrix yet and other users' jobs get the 4xx they should."""

from __future__ import annotations

import math

import pytest

from core.settings import Settings
from db.store import NotFound
from models.train import JobSpec, load_data
from worker.runner import JobRunner

TINY_MLP = {"epochs": 3, "hidden_sizes": [16, 16], "steps_per_epoch": 6, "lr": 0.01, "seed": 3}


def test_every_epoch_is_served_and_agrees_with_validation(store, client, tmp_path):
    job = store.create_job(model="mlp", dataset="digits", hyperparameters=TINY_MLP, device="cpu")
    settings = Settings(home=tmp_path / "worker", metrics_flush_seconds=0.05)
    assert JobRunner(store, settings, worker_name="w").run(job.id) == "succeeded"
    val_size = load_data(JobSpec("mlp", "digits", TINY_MLP)).y_val.shape[0]
    accuracy = {p["epoch"]: p for p in store.get_metrics(job.id)["val_accuracy"]}

    latest = client.get(f"/jobs/{job.id}/confusion")
    assert latest.status_code == 200, latest.text
    assert latest.json()["epochs"] == [1, 2, 3] and latest.json()["epoch"] == 3
    for epoch in (1, 2, 3):
        body = client.get(f"/jobs/{job.id}/confusion", params={"epoch": epoch}).json()
        assert body["epoch"] == epoch and body["epochs"] == [1, 2, 3]
        k, matrix = body["num_classes"], body["matrix"]
        assert k == 10 and len(matrix) == k and all(len(row) == k for row in matrix)
        assert sum(map(sum, matrix)) == body["total"] == val_size
        assert sum(matrix[i][i] for i in range(k)) == body["correct"]
        assert math.isclose(body["correct"] / body["total"], accuracy[epoch]["value"],
                            rel_tol=1e-6)
        assert body["step"] == accuracy[epoch]["step"] == 6 * epoch
    assert client.get(f"/jobs/{job.id}/confusion", params={"epoch": 3}).json() == latest.json()

    missing = client.get(f"/jobs/{job.id}/confusion", params={"epoch": 4})
    assert missing.status_code == 404 and "epoch 4" in missing.json()["detail"]
    for bad in (0, 1001, "last"):
        refused = client.get(f"/jobs/{job.id}/confusion", params={"epoch": bad})
        assert refused.status_code == 422, bad
        assert refused.json()["detail"][0]["loc"] == ["query", "epoch"]


def test_language_models_classifiers_without_one_and_unknown_jobs(store, client):
    lm = store.create_job(model="rnn_lm", dataset="pydocs", hyperparameters={}, device="cpu")
    refused = client.get(f"/jobs/{lm.id}/confusion")
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["path", "job_id"]
    assert "is for mlp and cnn jobs" in refused.json()["detail"][0]["msg"]

    queued = store.create_job(model="cnn", dataset="digits", hyperparameters={}, device="cpu")
    none_yet = client.get(f"/jobs/{queued.id}/confusion")
    assert none_yet.status_code == 404
    assert "no confusion matrix yet" in none_yet.json()["detail"]
    assert client.get("/jobs/999999/confusion").status_code == 404


def test_an_epoch_written_again_replaces_its_matrix(store):
    job = store.create_job(model="mlp", dataset="digits", hyperparameters={}, device="cpu")
    store.add_confusion(job.id, epoch=1, step=5, matrix=[[3, 1], [0, 4]])
    # a resumed run measures epoch 1 again (and a retried write repeats itself): no error
    store.add_confusion(job.id, epoch=1, step=5, matrix=[[2, 2], [1, 3]])
    store.add_confusion(job.id, epoch=1, step=5, matrix=[[2, 2], [1, 3]])
    epochs, found = store.get_confusion(job.id)
    assert epochs == [1]
    assert found == {"epoch": 1, "step": 5, "num_classes": 2, "matrix": [[2, 2], [1, 3]],
                     "total": 8, "correct": 5}
    assert store.get_confusion(job.id, 2) == ([1], None)
    with pytest.raises(NotFound):
        store.add_confusion(999999, epoch=1, step=1, matrix=[[1]])
    with pytest.raises(ValueError, match="K x K"):
        store.add_confusion(job.id, epoch=2, step=9, matrix=[[1, 2]])


def test_another_users_job_is_not_found(store, keyed_client, user_keys):
    client, headers = keyed_client, user_keys
    job = store.create_job(model="mlp", dataset="digits", hyperparameters={}, device="cpu",
                           owner="alice")
    store.add_confusion(job.id, epoch=1, step=10, matrix=[[5, 0], [1, 4]])
    mine = client.get(f"/jobs/{job.id}/confusion", headers=headers["alice"])
    assert mine.status_code == 200 and mine.json()["correct"] == 9
    theirs = client.get(f"/jobs/{job.id}/confusion", headers=headers["bob"])
    assert theirs.status_code == 404 and theirs.json()["detail"] == f"job {job.id} not found"
