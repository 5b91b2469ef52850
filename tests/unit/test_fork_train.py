"""Forking a run in the training core: fit(init_from=another job's checkpoint) starts from its
weights (and optimizer state when asked), its steps continue the parent's, its epochs and
schedule are its own; a fork interrupted resumes exactly from its own checkpoint; weights that
do not fit are refused, saying what differs."""

from __future__ import annotations

import math

import pytest
import torch

import models.train as train
from models import data as D
from models.checkpoints import mismatch
from models.train import Callbacks, JobSpec, fit, load_checkpoint, model_config

PARENT = {"epochs": 2, "hidden_sizes": [32, 16], "dropout": 0.0, "batch_size": 64,
          "lr": 0.01, "lr_schedule": "cosine", "seed": 1}


class Recorder(Callbacks):
    def __init__(self, stop_after_checkpoints=None):
        self.steps, self.epochs, self.checkpoints, self.progress = [], [], [], []
        self.stop_after_checkpoints = stop_after_checkpoints

    def on_step(self, step, epoch, metrics):
        self.steps.append((step, epoch, metrics))

    def on_epoch(self, epoch, step, metrics, texts):
        self.epochs.append((epoch, step, metrics))

    def on_checkpoint(self, epoch, step, blob, metrics):
        self.checkpoints.append((epoch, step, blob))

    def on_progress(self, epoch, total_epochs, step, total_steps, eta_seconds):
        self.progress.append((epoch, total_epochs, step, total_steps))

    def should_stop(self):
        n = self.stop_after_checkpoints
        return n is not None and len(self.checkpoints) >= n


@pytest.fixture(scope="module")
def digits():
    return D.load_image_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def parent(digits):
    """The parent run: (recorder, steps per epoch); its checkpoint after epoch 1 is forked."""
    rec = Recorder()
    fit(JobSpec("mlp", "digits", PARENT, "cpu"), rec, data=digits)
    return rec, math.ceil(digits.x_train.shape[0] / PARENT["batch_size"])


@pytest.fixture
def first_step_state(monkeypatch):
    """What the model and optimizer hold when fit() takes its first step (copies)."""
    seen = {}
    original = train._train_step

    def observing(run, *args, **kwargs):
        if not seen:
            seen["model"] = {k: v.clone() for k, v in run.model.state_dict().items()}
            seen["optimizer"] = _copy(run.optimizer.state_dict())
        return original(run, *args, **kwargs)

    monkeypatch.setattr(train, "_train_step", observing)
    return seen


def _copy(obj):
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy(v) for v in obj]
    return obj


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_fork_starts_from_the_parent_weights_and_continues_its_steps(
        digits, parent, first_step_state):
    rec, spe = parent
    epoch, parent_step, blob = rec.checkpoints[0]
    assert (epoch, parent_step) == (1, spe)
    fork_hp = {**PARENT, "epochs": 2, "lr": 0.003}
    fork = Recorder()
    result = fit(JobSpec("mlp", "digits", fork_hp, "cpu"), fork, data=digits, init_from=blob)

    assert result.status == "completed"
    ckpt = load_checkpoint(blob)
    assert _same_tensors(first_step_state["model"], ckpt["model_state"])
    assert first_step_state["optimizer"]["state"] == {}, "a fresh optimizer"
    # its curve continues the parent's: steps parent_step+1 on, epochs its own from 1
    assert [s for s, _, _ in fork.steps] == list(range(parent_step + 1, parent_step + 2 * spe + 1))
    assert [e for _, e, _ in fork.steps] == [1] * spe + [2] * spe
    assert [(e, s) for e, s, _ in fork.checkpoints] == [(1, parent_step + spe),
                                                         (2, parent_step + 2 * spe)]
    assert result.steps_done == parent_step + 2 * spe
    # a fresh schedule at the fork's own lr (cosine: the first step at the peak)
    assert fork.steps[0][2]["lr"] == pytest.approx(0.003)
    # progress counts this run's own work
    assert fork.progress[0] == (0, 2, 0, 2 * spe)
    assert fork.progress[-1] == (2, 2, 2 * spe, 2 * spe)
    # it learned on from where the parent was, not from scratch
    scratch = fit(JobSpec("mlp", "digits", {**fork_hp, "epochs": 1}, "cpu"), data=digits)
    assert fork.epochs[0][2]["val_loss"] < scratch.final_metrics["val_loss"]


def test_resume_optimizer_takes_the_parent_optimizer_state_but_the_forks_own_lr(
        digits, parent, first_step_state):
    rec, spe = parent
    _, parent_step, blob = rec.checkpoints[0]
    fork = Recorder()
    fit(JobSpec("mlp", "digits", {**PARENT, "epochs": 1, "lr": 0.002}, "cpu"), fork,
        data=digits, init_from=blob, init_optimizer=True)

    parent_opt = load_checkpoint(blob)["optimizer_state"]
    seen = first_step_state["optimizer"]
    assert seen["state"].keys() == parent_opt["state"].keys() and seen["state"]
    for k, slots in parent_opt["state"].items():
        assert _same_tensors(seen["state"][k], slots)  # Adam's step, exp_avg, exp_avg_sq
    assert seen["param_groups"][0]["lr"] == pytest.approx(0.002)
    assert seen["param_groups"][0]["initial_lr"] == pytest.approx(0.002)
    assert fork.steps[0][0] == parent_step + 1
    assert fork.steps[0][2]["lr"] == pytest.approx(0.002)


def test_resume_optimizer_needs_the_parents_optimizer(digits, parent):
    blob = parent[0].checkpoints[0][2]
    with pytest.raises(ValueError, match="optimizer"):
        fit(JobSpec("mlp", "digits", {**PARENT, "optimizer": "sgd"}, "cpu"), data=digits,
            init_from=blob, init_optimizer=True)
    # without it any optimizer may start from the weights
    result = fit(JobSpec("mlp", "digits", {**PARENT, "epochs": 1, "optimizer": "sgd"}, "cpu"),
                 data=digits, init_from=blob)
    assert result.status == "completed"


def test_an_interrupted_fork_resumes_exactly_from_its_own_checkpoint(digits, parent):
    rec, spe = parent
    _, parent_step, blob = rec.checkpoints[0]
    spec = JobSpec("mlp", "digits", {**PARENT, "epochs": 3, "lr": 0.004, "dropout": 0.2}, "cpu")
    full = Recorder()
    uninterrupted = fit(spec, full, data=digits, init_from=blob, init_optimizer=True)

    first = Recorder(stop_after_checkpoints=1)
    assert fit(spec, first, data=digits, init_from=blob, init_optimizer=True).status == "stopped"
    own = first.checkpoints[-1][2]
    rest = Recorder()
    # the worker passes only one of them; given both, the fork's own checkpoint wins
    resumed = fit(spec, rest, data=digits, resume_from=own, init_from=blob, init_optimizer=True)
    assert resumed.final_metrics == uninterrupted.final_metrics
    assert rest.steps[0][0] == parent_step + spe + 1
    assert [(s, e, m["train_loss"], m["lr"]) for s, e, m in rest.steps] == \
        [(s, e, m["train_loss"], m["lr"]) for s, e, m in full.steps[spe:]]
    assert rest.progress[0] == (1, 3, spe, 3 * spe), "progress still counts the fork's own steps"


def test_weights_that_do_not_fit_are_refused_saying_what_differs(digits, parent):
    blob = parent[0].checkpoints[0][2]
    ckpt = load_checkpoint(blob)
    other = JobSpec("mlp", "digits", {**PARENT, "hidden_sizes": [64, 64]}, "cpu")
    with pytest.raises(ValueError, match=r"layers\.0\.weight"):
        fit(other, data=digits, init_from=blob)
    config = model_config("mlp", other.hyperparameters, digits)
    assert mismatch(ckpt, "mlp", config) == \
        "hidden_sizes differs: parent [32, 16], this job [64, 64]"
    # what leaves the shapes alone fits
    same = JobSpec("mlp", "digits", {**PARENT, "activation": "tanh", "dropout": 0.5}, "cpu")
    assert mismatch(ckpt, "mlp", model_config("mlp", same.hyperparameters, digits)) is None
    cnn = JobSpec("cnn", "digits", {"channels": [4]}, "cpu")
    assert mismatch(ckpt, "cnn", model_config("cnn", cnn.hyperparameters, digits)) == \
        "model differs: parent mlp, this job cnn"
    with pytest.raises(ValueError, match="mlp"):
        fit(cnn, data=digits, init_from=blob)


def test_a_language_model_forks_only_onto_its_vocabulary():
    docs = D.pydocs_documents()
    text = D.text_data_from_documents(docs[:12], "char")
    hp = {"epochs": 1, "hidden_size": 16, "embedding_dim": 8, "seq_len": 16, "batch_size": 8,
          "steps_per_epoch": 3}
    rec = Recorder()
    fit(JobSpec("rnn_lm", "text", hp, "cpu"), rec, data=text)
    blob = rec.checkpoints[-1][2]
    fork = Recorder()
    fit(JobSpec("rnn_lm", "text", {**hp, "lr": 1e-3}, "cpu"), fork, data=text, init_from=blob)
    assert fork.steps[0][0] == 4
    other = D.text_data_from_string("abc abc abd " * 40, "char")
    with pytest.raises(ValueError, match="vocabulary"):
        fit(JobSpec("rnn_lm", "other", hp, "cpu"), data=other, init_from=blob)
