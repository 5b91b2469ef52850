"""The training core: models learn with default hyperparameters, report what they promise,
checkpoint, resume exactly, stop when asked."""

import io
import math

import pytest
import torch

from models import data as D
from models.registry import FAMILIES, validate_hyperparameters
from models.train import (
    CHECKPOINT_FORMAT,
    Callbacks,
    FitResult,
    JobSpec,
    fit,
    load_checkpoint,
    model_from_checkpoint,
)


class Recorder(Callbacks):
    def __init__(self, stop_after_steps=None):
        self.steps, self.epochs, self.checkpoints, self.progress = [], [], [], []
        self.stop_after_steps = stop_after_steps

    def on_step(self, step, epoch, metrics):
        self.steps.append((step, epoch, metrics))

    def on_epoch(self, epoch, step, metrics, texts):
        self.epochs.append((epoch, step, metrics, texts))

    def on_checkpoint(self, epoch, step, blob, metrics):
        self.checkpoints.append((epoch, step, blob, metrics))

    def on_progress(self, epoch, total_epochs, step, total_steps, eta_seconds):
        self.progress.append((epoch, total_epochs, step, total_steps, eta_seconds))

    def should_stop(self):
        return self.stop_after_steps is not None and len(self.steps) >= self.stop_after_steps


@pytest.fixture(scope="module")
def digits():
    return D.load_image_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def small_text():
    return D.text_data_from_documents(D.pydocs_documents()[:12], "char")


TINY_MLP = {"epochs": 3, "hidden_sizes": [32, 16], "dropout": 0.2, "batch_size": 64}
TINY_LM = {"epochs": 3, "hidden_size": 32, "embedding_dim": 16, "seq_len": 32, "batch_size": 16,
           "steps_per_epoch": 8, "dropout": 0.1, "num_layers": 2}


# ---------------------------------------------------------------------------------------------
# the models learn on real data with their default hyperparameters


def test_default_mlp_learns_digits():
    rec = Recorder()
    result = fit(JobSpec("mlp", "digits", {}, "cpu"), rec)
    assert result.status == "completed"
    assert result.final_metrics["val_accuracy"] >= 0.95


def test_default_cnn_learns_digits():
    result = fit(JobSpec("cnn", "digits", {}, "cpu"))
    assert result.status == "completed"
    assert result.final_metrics["val_accuracy"] >= 0.97


def test_default_rnn_lm_beats_the_unigram_baseline_by_20_percent():
    name = D.default_dataset("rnn_lm")
    hp = validate_hyperparameters("rnn_lm", {})
    data = D.load_text_dataset(name, tokenizer=hp["tokenizer"], seed=hp["seed"])
    baseline = D.unigram_baseline(data)
    rec = Recorder()
    result = fit(JobSpec("rnn_lm", name, {}, "cpu"), rec)  # loads the same data itself
    loss = result.final_metrics["val_loss"]
    assert loss <= 0.8 * baseline, (loss, baseline)
    assert result.final_metrics["val_perplexity"] == pytest.approx(math.exp(loss))
    sample = rec.epochs[-1][3]["sample"]
    assert isinstance(sample, str) and len(sample) > 100


# ---------------------------------------------------------------------------------------------
# reporting


def test_classifier_reports_steps_epochs_checkpoints_progress(digits):
    rec = Recorder()
    hp = {**TINY_MLP, "lr_schedule": "cosine", "lr": 0.01}
    result = fit(JobSpec("mlp", "digits", hp, "cpu"), rec, data=digits)
    spe = math.ceil(digits.x_train.shape[0] / 64)
    assert result == FitResult("completed", result.final_metrics, 3, 3 * spe)
    assert [s for s, _, _ in rec.steps] == list(range(1, 3 * spe + 1))
    assert [e for _, e, _ in rec.steps] == [1] * spe + [2] * spe + [3] * spe
    for _, _, m in rec.steps:
        assert set(m) == {"train_loss", "lr", "samples_per_s"} and m["samples_per_s"] > 0
    lrs = [m["lr"] for _, _, m in rec.steps]
    assert lrs[0] == 0.01 and lrs[-1] < 0.001 and lrs == sorted(lrs, reverse=True)  # cosine
    assert [(e, s) for e, s, _, _ in rec.epochs] == [(1, spe), (2, 2 * spe), (3, 3 * spe)]
    metrics = rec.epochs[-1][2]
    assert {"val_loss", "val_accuracy", "grad_norm/layers.0", "grad_norm/layers.1",
            "grad_norm/head"} == set(metrics)
    assert rec.epochs[-1][3] == {}
    assert result.final_metrics == {**metrics, "train_loss": rec.steps[-1][2]["train_loss"]}
    assert [(e, s) for e, s, _, _ in rec.checkpoints] == [(1, spe), (2, 2 * spe), (3, 3 * spe)]
    assert rec.progress[0][:4] == (0, 3, 0, 3 * spe)
    assert rec.progress[-1][:4] == (3, 3, 3 * spe, 3 * spe) and rec.progress[-1][4] == 0


def test_checkpoint_loads_with_weights_only_and_describes_itself(digits):
    rec = Recorder()
    fit(JobSpec("cnn", "digits", {"epochs": 1, "channels": [4]}, "cpu"), rec, data=digits)
    epoch, step, blob, metrics = rec.checkpoints[0]
    ckpt = torch.load(io.BytesIO(blob), weights_only=True)
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["model"] == "cnn"
    assert ckpt["dataset"] == "digits" and (ckpt["epoch"], ckpt["step"]) == (epoch, step)
    hp = validate_hyperparameters("cnn", {"epochs": 1, "channels": [4]})
    assert ckpt["hyperparameters"] == hp
    assert {"model_state", "optimizer_state", "scheduler_state", "rng", "metrics",
            "model_config"} <= set(ckpt)
    assert set(ckpt["rng"]) == {"torch", "cuda", "shuffle"}
    assert ckpt["metrics"] == metrics
    model, _ = model_from_checkpoint(blob)
    with torch.no_grad():
        acc = (model(digits.x_val)[0].argmax(-1) == digits.y_val).float().mean().item()
    assert acc == pytest.approx(metrics["val_accuracy"])


def test_language_model_reports_tokens_perplexity_and_samples(small_text):
    rec = Recorder()
    hp = {**TINY_LM, "cell": "lstm", "tie_weights": True}
    result = fit(JobSpec("rnn_lm", "upload", hp, "cpu"), rec, data=small_text)
    assert result.steps_done == 3 * 8
    assert set(rec.steps[0][2]) == {"train_loss", "lr", "tokens_per_s"}
    epoch, step, metrics, texts = rec.epochs[-1]
    assert metrics["val_perplexity"] == pytest.approx(math.exp(metrics["val_loss"]))
    assert {"grad_norm/embedding", "grad_norm/rnn.0", "grad_norm/rnn.1", "grad_norm/proj",
            "grad_norm/decoder"} <= set(metrics)
    assert texts["sample"].startswith(small_text.decode(small_text.val_ids[:16].tolist()))
    ckpt = load_checkpoint(rec.checkpoints[-1][2])
    assert ckpt["vocab"] == small_text.vocab and ckpt["tokenizer"] == "char"


@pytest.mark.parametrize("model", list(FAMILIES))
def test_each_family_reports_the_metrics_its_table_entry_names(model, digits, small_text):
    # the dashboard and the jobs list read these names from the table (GET /models)
    fam = FAMILIES[model]
    data = small_text if fam.data_kind == "text" else digits
    small = {"mlp": {"hidden_sizes": [8, 8]}, "cnn": {"channels": [4]},
             "rnn_lm": {"hidden_size": 8, "embedding_dim": 8, "seq_len": 16}}[model]
    rec = Recorder()
    hp = {**small, "epochs": 1, "steps_per_epoch": 2, "batch_size": 16}
    fit(JobSpec(model, "data", hp, "cpu"), rec, data=data)
    reported = {name for _, _, metrics in rec.steps for name in metrics}
    reported |= {name for _, _, metrics, _ in rec.epochs for name in metrics}
    assert {n for n in reported if not n.startswith("grad_norm/")} == set(fam.metrics)


def test_word_level_lm_on_uploaded_text():
    text = D.validate_text_upload(" ".join(D.pydocs_documents()[:6]).encode())
    data = D.text_data_from_string(text, "word", val_fraction=0.1)
    rec = Recorder()
    hp = {**TINY_LM, "tokenizer": "word", "epochs": 1, "cell": "rnn"}
    fit(JobSpec("rnn_lm", "my-upload", hp, "cpu"), rec, data=data)
    assert len(rec.epochs[0][3]["sample"].split()) > 20


def test_sigmoid_shows_vanishing_gradients_relu_does_not(digits):
    ratios = {}
    for act in ("relu", "sigmoid"):
        hp = {"epochs": 1, "activation": act, "hidden_sizes": [64] * 5, "dropout": 0.0}
        result = fit(JobSpec("mlp", "digits", hp, "cpu"), data=digits)
        m = result.final_metrics
        ratios[act] = m["grad_norm/layers.0"] / m["grad_norm/head"]
    assert ratios["sigmoid"] < 0.01 < 0.1 < ratios["relu"]


# ---------------------------------------------------------------------------------------------
# determinism, resume, cancel


def test_same_seed_same_run_other_seed_other_run(digits):
    a = fit(JobSpec("mlp", "digits", TINY_MLP, "cpu"), data=digits)
    b = fit(JobSpec("mlp", "digits", TINY_MLP, "cpu"), data=digits)
    c = fit(JobSpec("mlp", "digits", {**TINY_MLP, "seed": 1}, "cpu"), data=digits)
    assert a.final_metrics == b.final_metrics
    assert a.final_metrics != c.final_metrics


def _uninterrupted(model, hp, dataset, digits, small_text):
    """The reference of a resume test: (data, spec, its recorder, its result) of one whole run."""
    data = digits if dataset == "digits" else small_text
    spec = JobSpec(model, dataset, hp, "cpu")
    full = Recorder()
    return data, spec, full, fit(spec, full, data=data)


@pytest.mark.parametrize("model,hp,dataset", [
    ("mlp", {**TINY_MLP, "epochs": 4, "lr_schedule": "cosine", "optimizer": "sgd", "lr": 0.1},
     "digits"),
    ("cnn", {"epochs": 3, "channels": [4, 8], "dropout": 0.3, "optimizer": "adamw",
             "weight_decay": 0.01, "steps_per_epoch": 5}, "digits"),
    ("rnn_lm", {**TINY_LM, "epochs": 4, "lr_schedule": "cosine", "cell": "gru"}, "text"),
])
def test_resume_from_epoch_checkpoint_ends_like_an_uninterrupted_run(
        model, hp, dataset, digits, small_text):
    data, spec, full, uninterrupted = _uninterrupted(model, hp, dataset, digits, small_text)
    epoch, step, blob, _ = full.checkpoints[1]  # after epoch 2
    resumed_rec = Recorder()
    resumed = fit(spec, resumed_rec, data=data, resume_from=blob)
    assert resumed.status == "completed"
    assert resumed.final_metrics == uninterrupted.final_metrics
    assert (resumed.epochs_done, resumed.steps_done) == (uninterrupted.epochs_done,
                                                          uninterrupted.steps_done)
    assert resumed_rec.steps[0][0] == step + 1
    def losses_and_rates(steps):  # samples_per_s is wall-clock, everything else must match
        return [(s, e, m["train_loss"], m["lr"]) for s, e, m in steps]

    assert losses_and_rates(resumed_rec.steps) == losses_and_rates(full.steps[step:])
    assert resumed_rec.epochs[-1][2] == full.epochs[-1][2]
    assert resumed_rec.epochs[-1][3] == full.epochs[-1][3]  # same sampled text for the LM


class StopAndCheckpoint(Recorder):
    """A run stopped mid-epoch that asks for a checkpoint there (as a draining worker does)."""

    def checkpoint_on_stop(self):
        return True


@pytest.mark.parametrize("model,hp,dataset", [
    ("mlp", {**TINY_MLP, "epochs": 3, "lr_schedule": "cosine", "dropout": 0.2}, "digits"),
    ("rnn_lm", {**TINY_LM, "epochs": 3, "lr_schedule": "cosine", "cell": "lstm",
                "dropout": 0.1}, "text"),
])
def test_resume_from_a_mid_epoch_stop_ends_like_an_uninterrupted_run(
        model, hp, dataset, digits, small_text):
    data, spec, full, uninterrupted = _uninterrupted(model, hp, dataset, digits, small_text)
    spe = uninterrupted.steps_done // hp["epochs"]
    stop_at = spe + spe // 2 + 1  # in the middle of the second epoch
    first = StopAndCheckpoint(stop_after_steps=stop_at)
    assert fit(spec, first, data=data).status == "stopped"
    epoch, step, blob, _ = first.checkpoints[-1]
    assert (epoch, step) == (1, stop_at), "a checkpoint at the step where the run stopped"

    rest = Recorder()
    resumed = fit(spec, rest, data=data, resume_from=blob)
    assert resumed.final_metrics == uninterrupted.final_metrics
    assert rest.steps[0][0] == stop_at + 1
    assert [(s, e, m["train_loss"]) for s, e, m in rest.steps] == \
        [(s, e, m["train_loss"]) for s, e, m in full.steps[stop_at:]]


def test_resume_of_a_finished_run_does_nothing(digits):
    rec = Recorder()
    first = fit(JobSpec("mlp", "digits", TINY_MLP, "cpu"), rec, data=digits)
    again = Recorder()
    result = fit(JobSpec("mlp", "digits", TINY_MLP, "cpu"), again, data=digits,
                 resume_from=rec.checkpoints[-1][2])
    assert result.status == "completed" and result.final_metrics == first.final_metrics
    assert again.steps == [] and again.checkpoints == []


def test_resume_rejects_another_models_checkpoint(digits):
    rec = Recorder()
    fit(JobSpec("mlp", "digits", {**TINY_MLP, "epochs": 1}, "cpu"), rec, data=digits)
    with pytest.raises(ValueError, match="mlp"):
        fit(JobSpec("cnn", "digits", {"epochs": 1}, "cpu"), data=digits,
            resume_from=rec.checkpoints[0][2])
    with pytest.raises(ValueError, match="checkpoint"):
        fit(JobSpec("mlp", "digits", TINY_MLP, "cpu"), data=digits,
            resume_from=_blob({"format": "something else"}))


def _blob(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_should_stop_ends_the_run_between_steps(digits):
    rec = Recorder(stop_after_steps=30)
    result = fit(JobSpec("mlp", "digits", {**TINY_MLP, "epochs": 50}, "cpu"), rec, data=digits)
    spe = math.ceil(digits.x_train.shape[0] / 64)
    assert result.status == "stopped"
    assert result.steps_done == 30 and len(rec.steps) == 30
    assert result.epochs_done == 30 // spe == len(rec.epochs) == len(rec.checkpoints)
    assert result.final_metrics["train_loss"] == rec.steps[-1][2]["train_loss"]


# ---------------------------------------------------------------------------------------------
# devices and bad input


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error(digits):
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        fit(JobSpec("mlp", "digits", TINY_MLP, "cuda"), data=digits)


def test_auto_device_trains_where_it_can(digits):
    result = fit(JobSpec("mlp", "digits", {**TINY_MLP, "epochs": 1, "precision": "bf16"}, "auto"),
                 data=digits)
    assert result.status == "completed"


def test_bad_input_is_rejected_before_training(digits, small_text):
    with pytest.raises(ValueError, match="text"):
        fit(JobSpec("rnn_lm", "digits", {}, "cpu"), data=digits)
    tiny = D.text_data_from_string("hello world, " * 3, "char")
    with pytest.raises(ValueError, match="seq_len"):
        fit(JobSpec("rnn_lm", "x", {"seq_len": 64}, "cpu"), data=tiny)
    with pytest.raises(ValueError, match="device"):
        fit(JobSpec("mlp", "digits", {}, "tpu"), data=digits)


def test_a_diverging_run_fails_with_a_clear_error(digits):
    broken = D.ImageData(digits.x_train.clone(), digits.y_train, digits.x_val, digits.y_val,
                         10, 1, 8, 8)
    broken.x_train[100:] = float("nan")
    rec = Recorder()
    with pytest.raises(FloatingPointError, match="diverged"):
        fit(JobSpec("mlp", "digits", {**TINY_MLP, "batch_size": 8}, "cpu"), rec, data=broken)
    assert all(math.isfinite(m["train_loss"]) for _, _, m in rec.steps)
