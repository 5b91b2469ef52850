"""Forking a run, against the real app and store (SQLite and Postgres): POST /jobs with
from_checkpoint records the parent and inherits its hyperparameters; forks that cannot start
from the checkpoint are refused with 422 saying why; another user's parent is a 404; the
parent's checkpoint pruning keeps a checkpoint a fork starts from; a fork run by the worker
continues its parent's curve."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.security import new_api_key
from core.settings import Settings
from db.store import Store
from models.train import Callbacks, JobSpec, fit
from worker.runner import JobRunner

# epochs 2 x 2 steps: checkpoints at (epoch 1, step 2) and (epoch 2, step 4)
PARENT_HP = {"epochs": 2, "hidden_sizes": [16, 16], "steps_per_epoch": 2, "seed": 3}


class Checkpoints(Callbacks):
    def __init__(self):
        self.taken = []

    def on_checkpoint(self, epoch, step, blob, metrics):
        self.taken.append((epoch, step, blob))


@pytest.fixture(scope="module")
def parent_blobs() -> list[tuple[int, int, bytes]]:
    """The (epoch, step, bytes) of a real PARENT_HP run's checkpoints."""
    rec = Checkpoints()
    fit(JobSpec("mlp", "digits", PARENT_HP, "cpu"), rec)
    return rec.taken


def submit(client: TestClient, headers=None, **body):
    body = {"model": "mlp", "dataset": "digits", **body}
    return client.post("/jobs", json=body, headers=headers or {})


def make_parent(client, store, blobs, headers=None) -> tuple[dict, list]:
    """A parent job submitted over HTTP, with its checkpoints stored as its worker would."""
    response = submit(client, headers, hyperparameters=PARENT_HP, name="parent")
    assert response.status_code == 201, response.text
    job = response.json()
    records = [store.add_checkpoint(job["id"], epoch=e, step=s, data=b, metrics={})
               for e, s, b in blobs]
    return job, records


def error_of(response) -> tuple[list, str]:
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    return error["loc"], error["msg"]


# ---- submitting a fork ---------------------------------------------------------------------


def test_a_fork_records_its_parent_and_inherits_its_hyperparameters(client, store, parent_blobs):
    parent, checkpoints = make_parent(client, store, parent_blobs)
    response = submit(client, hyperparameters={"lr": 1e-4, "epochs": 3},
                      from_checkpoint={"job": parent["id"]})
    assert response.status_code == 201, response.text
    fork = response.json()
    newest = checkpoints[-1]
    assert fork["parent"] == {"job": parent["id"], "checkpoint": newest.id, "epoch": 2,
                              "step": 4, "resume_optimizer": False}
    assert fork["hyperparameters"] == {**parent["hyperparameters"], "lr": 1e-4, "epochs": 3}

    shown = client.get(f"/jobs/{fork['id']}").json()
    assert shown["parent"] == fork["parent"]
    listed = {j["id"]: j for j in client.get("/jobs").json()["items"]}
    assert listed[fork["id"]]["parent"] == fork["parent"]
    assert listed[parent["id"]]["parent"] is None and shown["status"] == "queued"
    record = store.get_job(fork["id"])
    assert (record.parent_job_id, record.parent_checkpoint_id, record.parent_epoch,
            record.parent_step, record.resume_optimizer) == (parent["id"], newest.id, 2, 4, False)

    # a named checkpoint, with the optimizer state; what leaves the shapes alone may change
    older = checkpoints[0]
    response = submit(client, hyperparameters={"activation": "tanh", "dropout": 0.5},
                      from_checkpoint={"job": parent["id"], "checkpoint": older.id,
                                       "resume_optimizer": True})
    assert response.status_code == 201, response.text
    assert response.json()["parent"] == {"job": parent["id"], "checkpoint": older.id,
                                         "epoch": 1, "step": 2, "resume_optimizer": True}


def test_forks_that_cannot_start_from_the_checkpoint_are_refused(client, store, parent_blobs):
    parent, checkpoints = make_parent(client, store, parent_blobs)
    fork = {"job": parent["id"]}

    loc, msg = error_of(submit(client, model="cnn", from_checkpoint=fork))
    assert loc == ["body", "from_checkpoint"] and "model differs" in msg

    loc, msg = error_of(submit(client, hyperparameters={"hidden_sizes": [64, 64]},
                               from_checkpoint=fork))
    assert loc == ["body", "from_checkpoint"]
    assert "hidden_sizes differs: parent [16, 16], this job [64, 64]" in msg
    assert f"checkpoint {checkpoints[-1].id} of job {parent['id']}" in msg

    loc, msg = error_of(submit(client, hyperparameters={"optimizer": "sgd"},
                               from_checkpoint={**fork, "resume_optimizer": True}))
    assert loc == ["body", "from_checkpoint"] and "optimizer differs" in msg
    # a fresh optimizer may be another one
    assert submit(client, hyperparameters={"optimizer": "sgd"},
                  from_checkpoint=fork).status_code == 201

    loc, msg = error_of(submit(client, from_checkpoint={**fork, "checkpoint": 999_999}))
    assert loc == ["body", "from_checkpoint", "checkpoint"] and "999999" in msg
    # another job's checkpoint is not this parent's
    other, other_checkpoints = make_parent(client, store, parent_blobs[:1])
    loc, _ = error_of(submit(client, from_checkpoint={**fork, "checkpoint":
                                                      other_checkpoints[0].id}))
    assert loc == ["body", "from_checkpoint", "checkpoint"]

    bare = submit(client, hyperparameters=PARENT_HP).json()
    loc, msg = error_of(submit(client, from_checkpoint={"job": bare["id"]}))
    assert loc == ["body", "from_checkpoint", "job"] and "no checkpoint" in msg

    # the fork's own hyperparameters are checked as any job's
    loc, _ = error_of(submit(client, hyperparameters={"lr": -1}, from_checkpoint=fork))
    assert loc == ["body", "hyperparameters", "lr"]
    loc, _ = error_of(submit(client, from_checkpoint={"job": parent["id"], "extra": 1}))
    assert loc[:2] == ["body", "from_checkpoint"]

    missing = submit(client, from_checkpoint={"job": 123_456})
    assert missing.status_code == 404 and missing.json()["detail"] == "job 123456 not found"
    listed = client.get("/jobs").json()["items"]
    assert len(listed) == 4, "refused forks made no job (parent, other, bare, the sgd fork)"


LM_HP = {"epochs": 1, "hidden_size": 16, "embedding_dim": 8, "steps_per_epoch": 1}


@pytest.fixture(scope="module")
def lm_blob() -> bytes:
    rec = Checkpoints()
    fit(JobSpec("rnn_lm", "pydocs", LM_HP, "cpu"), rec)
    return rec.taken[-1][2]


def test_a_language_model_forks_onto_its_parents_vocabulary_only(client, store, lm_blob):
    parent = submit(client, model="rnn_lm", dataset="pydocs", hyperparameters=LM_HP).json()
    store.add_checkpoint(parent["id"], epoch=1, step=1, data=lm_blob)
    fork = {"job": parent["id"]}
    body = {"model": "rnn_lm", "dataset": "pydocs", "from_checkpoint": fork}
    _, msg = error_of(submit(client, **body, hyperparameters={"tokenizer": "word"}))
    assert "tokenizer differs: parent char, this job word" in msg and "vocabulary" in msg
    _, msg = error_of(submit(client, **body, hyperparameters={"cell": "lstm"}))
    assert "cell differs: parent gru, this job lstm" in msg
    _, msg = error_of(submit(client, **{**body, "dataset": "fortunes"}))
    assert "dataset differs" in msg or "unknown dataset" in msg  # fortunes may be absent
    response = submit(client, **body, hyperparameters={"lr": 1e-4, "dropout": 0.3})
    assert response.status_code == 201, response.text


def test_a_retried_fork_is_the_same_job_and_another_parent_is_not(client, store, parent_blobs):
    parent, _ = make_parent(client, store, parent_blobs)
    key = {"Idempotency-Key": "fork-1"}
    first = submit(client, key, from_checkpoint={"job": parent["id"]})
    again = submit(client, key, from_checkpoint={"job": parent["id"]})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    other, _ = make_parent(client, store, parent_blobs)
    loc, _ = error_of(submit(client, key, from_checkpoint={"job": other["id"]}))
    assert loc == ["header", "Idempotency-Key"]


def _key(store: Store, owner: str, admin: bool = False) -> dict[str, str]:
    key, prefix, digest = new_api_key()
    store.add_api_key(owner, prefix, digest, is_admin=admin)
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keys(store: Store) -> dict[str, dict[str, str]]:
    return {"alice": _key(store, "alice"), "bob": _key(store, "bob"),
            "root": _key(store, "root", admin=True)}


@pytest.fixture
def secured(store: Store, keys, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path / "home", broker_url=None, database_url=None,
                        data_dir=tmp_path / "data", require_keys=True)
    with TestClient(create_app(settings, store=store), raise_server_exceptions=False) as c:
        yield c


def test_another_users_job_is_no_parent(secured, store, keys, parent_blobs):
    alice, bob, root = keys["alice"], keys["bob"], keys["root"]
    parent, _ = make_parent(secured, store, parent_blobs, headers=alice)
    refused = submit(secured, bob, from_checkpoint={"job": parent["id"]})
    assert refused.status_code == 404
    assert refused.json()["detail"] == f"job {parent['id']} not found"
    # its owner may fork it, and an admin (who may see every job)
    assert submit(secured, alice, from_checkpoint={"job": parent["id"]}).status_code == 201
    forked = submit(secured, root, from_checkpoint={"job": parent["id"]})
    assert forked.status_code == 201 and forked.json()["owner"] == "root"


# ---- the parent's checkpoints --------------------------------------------------------------


def test_pruning_keeps_the_checkpoint_a_fork_starts_from(store, parent_blobs):
    blob = parent_blobs[0][2]
    parent = store.create_job("mlp", "digits", PARENT_HP, device="cpu")
    first = store.add_checkpoint(parent.id, epoch=1, step=2, data=blob, keep_last=2)
    store.create_job("mlp", "digits", PARENT_HP, device="cpu", parent_job_id=parent.id,
                     parent_checkpoint_id=first.id, parent_epoch=1, parent_step=2)
    store.create_job("mlp", "digits", PARENT_HP, device="cpu")  # no parent: NULL columns
    for epoch in range(2, 6):
        store.add_checkpoint(parent.id, epoch=epoch, step=2 * epoch, data=blob, keep_last=2)
    assert [c.epoch for c in store.list_checkpoints(parent.id)] == [1, 4, 5]
    assert store.prune_checkpoints(parent.id, keep_last=1) == 1
    assert [c.epoch for c in store.list_checkpoints(parent.id)] == [1, 5]
    assert store.get_checkpoint_data(parent.id, first.id) is not None


# ---- a fork through the worker -------------------------------------------------------------


def test_the_worker_runs_a_fork_from_its_parents_checkpoint(client, store, tmp_path):
    settings = Settings(home=tmp_path / "worker", metrics_flush_seconds=0.05,
                        cancel_check_seconds=0.0, checkpoints_keep=1)
    runner = JobRunner(store, settings, worker_name="test-worker")
    hp = {**PARENT_HP, "steps_per_epoch": 3}
    parent = submit(client, hyperparameters=hp, device="cpu").json()
    assert runner.run(parent["id"]) == "succeeded"
    [parent_checkpoint] = store.list_checkpoints(parent["id"])
    assert (parent_checkpoint.epoch, parent_checkpoint.step) == (2, 6)

    response = submit(client, hyperparameters={"lr": 5e-4, "epochs": 2}, device="cpu",
                      from_checkpoint={"job": parent["id"]})
    assert response.status_code == 201, response.text
    fork_id = response.json()["id"]
    assert runner.run(fork_id) == "succeeded"

    fork = store.get_job(fork_id)
    assert (fork.parent_job_id, fork.parent_checkpoint_id, fork.parent_epoch,
            fork.parent_step) == (parent["id"], parent_checkpoint.id, 2, 6)
    steps = [p["step"] for p in store.get_metrics(fork_id)["train_loss"]]
    assert steps == list(range(7, 13)), "the fork's curve continues the parent's"
    assert [p["step"] for p in store.get_metrics(parent["id"])["train_loss"]] == list(range(1, 7))
    assert [(c.epoch, c.step) for c in store.list_checkpoints(fork_id)] == [(2, 12)]
    # progress is the fork's own: 2 epochs of 3 steps
    assert (fork.epoch, fork.total_epochs, fork.step, fork.total_steps) == (2, 2, 6, 6)
    shown = client.get(f"/jobs/{fork_id}").json()
    assert shown["parent"]["step"] == 6 and shown["status"] == "succeeded"
    # the parent's newest checkpoint was kept while later ones would have replaced it
    assert store.get_checkpoint_data(parent["id"], parent_checkpoint.id) is not None


def test_a_fork_whose_parent_checkpoint_is_gone_fails_saying_so(store, tmp_path):
    runner = JobRunner(store, Settings(home=tmp_path, metrics_flush_seconds=0.05),
                       worker_name="w")
    parent = store.create_job("mlp", "digits", PARENT_HP, device="cpu")
    fork = store.create_job("mlp", "digits", PARENT_HP, device="cpu", parent_job_id=parent.id,
                            parent_checkpoint_id=424242, parent_epoch=1, parent_step=2)
    assert runner.run(fork.id) == "failed"
    assert "no longer exists" in store.get_job(fork.id).error
