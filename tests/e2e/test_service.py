"""The whole path, HTTP -> queue -> worker -> database, with real processes in both modes."""

from __future__ import annotations

import hashlib
import io
import time

import pytest
import torch

pytestmark = pytest.mark.e2e

CORPUS = "\n".join(
    f"the {animal} sat on the {thing} and the {thing} was {mood} ."
    for animal in ("cat", "dog", "bird", "fox") for thing in ("mat", "log", "hat")
    for mood in ("warm", "old", "red")
) * 8

# Small hyperparameters: these tests prove the service path, the learning is proven in tests/unit.
JOBS = {
    "mlp": ("digits", {"epochs": 2, "hidden_sizes": [32, 32], "seed": 1}),
    "cnn": ("digits", {"epochs": 1, "channels": [8, 16], "seed": 1}),
    "rnn_lm": ("tiny-corpus", {"epochs": 2, "hidden_size": 32, "embedding_dim": 16,
                               "seq_len": 16, "tokenizer": "word", "seed": 1}),
}


def submit(service, model, dataset, hp, **extra) -> dict:
    response = service.http.post("/jobs", json={"model": model, "dataset": dataset,
                                                "hyperparameters": hp, **extra})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued"
    return job


def check_finished_run(service, job: dict) -> None:
    job_id, model = job["id"], job["model"]
    assert job["status"] == "succeeded", job.get("error")
    assert job["attempts"] == 1
    assert job["started_at"] and job["finished_at"]
    epochs = job["hyperparameters"]["epochs"]
    assert job["progress"]["epoch"] == epochs == job["progress"]["total_epochs"]

    series = service.http.get(f"/jobs/{job_id}/metrics").json()["series"]
    assert len(series["train_loss"]) == job["progress"]["step"] > epochs
    steps = [p["step"] for p in series["train_loss"]]
    assert steps == sorted(set(steps)), "one row per step, in order"
    assert [p["epoch"] for p in series["val_loss"]] == list(range(1, epochs + 1))
    headline = "val_perplexity" if model == "rnn_lm" else "val_accuracy"
    assert len(series[headline]) == epochs
    assert any(name.startswith("grad_norm/") for name in series)
    assert ("tokens_per_s" if model == "rnn_lm" else "samples_per_s") in series

    checkpoints = service.http.get(f"/jobs/{job_id}/checkpoints").json()
    assert [c["epoch"] for c in checkpoints] == list(range(1, epochs + 1))
    latest = checkpoints[-1]
    blob = service.http.get(latest["download_url"]).content
    assert len(blob) == latest["size"]
    assert hashlib.sha256(blob).hexdigest() == latest["sha256"]
    state = torch.load(io.BytesIO(blob), weights_only=True)
    assert state["epoch"] == epochs and state["model"] == model
    if model == "rnn_lm":
        texts = service.http.get(f"/jobs/{job_id}/texts").json()
        assert len(texts) == epochs and all(t["text"] for t in texts)


def exercise_service(service) -> None:
    upload = service.http.post("/datasets", data={"name": "tiny-corpus"},
                               files={"file": ("corpus.txt", CORPUS.encode(), "text/plain")})
    assert upload.status_code == 201, upload.text

    jobs = {model: submit(service, model, dataset, hp) for model, (dataset, hp) in JOBS.items()}
    # A job that asks for CUDA waits for a GPU worker; this machine's worker must not take it.
    cuda_job = submit(service, "mlp", "digits", {"epochs": 1}, device="cuda")
    # A second MLP that differs in one hyperparameter, for compare.
    other = submit(service, "mlp", "digits", {**JOBS["mlp"][1], "activation": "tanh"},
                   name="tanh run")

    finished = {m: service.wait_status(j["id"], {"succeeded", "failed", "cancelled"})
                for m, j in jobs.items()}
    for job in finished.values():
        check_finished_run(service, job)
    service.wait_status(other["id"], {"succeeded"})

    compare = service.http.get(f"/compare?ids={jobs['mlp']['id']},{other['id']},{jobs['cnn']['id']}")
    assert compare.status_code == 200, compare.text
    body = compare.json()
    assert [r["id"] for r in body["runs"]] == [jobs["mlp"]["id"], other["id"], jobs["cnn"]["id"]]
    assert "activation" in body["differing"] and "model" in body["differing"]
    assert "seed" not in body["differing"], "keys equal in every run are not differing"
    for run in body["runs"]:
        assert run["best"]["val_accuracy"] >= run["final"]["val_accuracy"] - 1e-12

    # Cancel a running job: it stops between steps and the worker is free again afterwards.
    long_job = submit(service, "mlp", "digits", {"epochs": 500})
    service.wait_status(long_job["id"], {"running"})
    response = service.http.post(f"/jobs/{long_job['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = service.http.post(f"/jobs/{long_job['id']}/cancel")
    assert again.status_code == 409
    after = submit(service, "mlp", "digits", {"epochs": 1, "hidden_sizes": [16, 16]})
    assert service.wait_status(after["id"], {"succeeded", "failed"}, timeout=120)["status"] == "succeeded"
    cancelled = service.http.get(f"/jobs/{long_job['id']}").json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["progress"]["epoch"] < 500

    # Cancel a queued job: it never runs.
    queued = service.http.post(f"/jobs/{cuda_job['id']}/cancel").json()
    assert queued["status"] == "cancelled" and queued["attempts"] == 0

    bad = service.http.post("/jobs", json={"model": "mlp", "dataset": "digits",
                                           "hyperparameters": {"lr": -1}})
    assert bad.status_code == 422 and "lr" in bad.text


def test_distributed_mode_postgres_redis(distributed_service):
    exercise_service(distributed_service)


def test_embedded_mode_sqlite_filesystem_broker(embedded_service):
    service = embedded_service
    assert (service.home / "trainyard.db").exists(), "embedded state lives under TRAINYARD_HOME"
    exercise_service(service)


def test_embedded_cli_and_an_extra_worker_joining(embedded_service):
    service = embedded_service
    # A second worker started by the same user with the same settings joins the service.
    service.start("worker-2", "worker", "--name", "extra@%h")
    out = service.cli("submit", "mlp", "--dataset", "digits", "--set", "epochs=60",
                      "--set", "hidden_sizes=[256,256]", "--name", "cli-a")
    assert out.returncode == 0, out.stderr
    out = service.cli("submit", "mlp", "--dataset", "digits", "--set", "epochs=60",
                      "--set", "hidden_sizes=[256,256]", "--set", "activation=tanh")
    assert out.returncode == 0, out.stderr
    page = service.http.get("/jobs").json()
    ids = [job["id"] for job in page["items"]]
    assert len(ids) == 2

    # Both run at once, on two different workers.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        jobs = [service.http.get(f"/jobs/{i}").json() for i in ids]
        if all(j["status"] == "running" for j in jobs):
            break
        time.sleep(0.2)
    assert all(j["status"] == "running" for j in jobs), service.logs()
    assert len({j["worker"] for j in jobs}) == 2

    for job_id in ids:
        assert service.cli("cancel", str(job_id)).returncode == 0
    listing = service.cli("list")
    assert listing.returncode == 0 and "cancelled" in listing.stdout and "cli-a" in listing.stdout

    out = service.cli("submit", "mlp", "--dataset", "digits", "--set", "epochs=1", "--watch")
    assert out.returncode == 0, out.stderr + service.logs()
    assert "succeeded" in out.stdout
    assert "HTTP Request" not in out.stderr + out.stdout, "no log line per request"
    listing = service.cli("list")
    assert "val_" in listing.stdout, "the list shows each finished job's best metric"
    compare = service.cli("compare", *(str(i) for i in ids))
    assert compare.returncode == 0 and "activation" in compare.stdout

    bad = service.cli("submit", "mlp", "--dataset", "digits", "--set", "epochs=0")
    assert bad.returncode == 2 and "epochs" in bad.stderr
