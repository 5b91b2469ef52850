"""The fast path (models/acceleration.py) on the CPU: what it changes here, and that a compiled
run behaves as an eager one for the service (same curve within float tolerance, exact resume,
checkpoints that load without compiling), and its fused optimizers. The CUDA-only pieces
(bf16, channels_last, CUDA graphs) are checked where a GPU is (skipped here) and measured by
bench/gpu.py."""

from __future__ import annotations

import pytest
import torch

from models.acceleration import (
    CompiledForward,
    memory_format,
    optimizer_options,
    resolve_precision,
)
from models.checkpoints import load_checkpoint
from models.train import Callbacks, JobSpec, build_optimizer, fit

CPU = torch.device("cpu")
# No dropout: compiled dropout draws its masks from another generator (Inductor's), so only
# a run without it can be compared step by step with an eager one.
HP = {"epochs": 2, "steps_per_epoch": 6, "hidden_sizes": [16, 16], "seed": 3, "batch_size": 32,
      "dropout": 0.0}


class Steps(Callbacks):
    def __init__(self, stop_after: int | None = None):
        self.losses, self.epochs, self.blobs = {}, [], []
        self.stop_after = stop_after

    def on_step(self, step, epoch, metrics):
        self.losses[step] = metrics["train_loss"]

    def on_epoch(self, epoch, step, metrics, texts):
        self.epochs.append(dict(metrics))

    def on_checkpoint(self, epoch, step, blob, metrics):
        self.blobs.append(blob)

    def should_stop(self):
        return self.stop_after is not None and len(self.losses) >= self.stop_after

    def checkpoint_on_stop(self):
        return True


def test_on_the_cpu_the_fast_path_is_fused_optimizers_and_compile():
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "fp32"  # the CPU trains in fp32, as documented
    assert optimizer_options(CPU) == {"fused": True}
    net = torch.nn.Linear(4, 4)
    for optimizer in ("adam", "adamw", "sgd"):
        hp = JobSpec("mlp", "digits", {"optimizer": optimizer}).hyperparameters
        assert build_optimizer(net, hp, CPU).defaults["fused"] is True, optimizer
    assert memory_format("cnn", CPU) is None
    hp = JobSpec("mlp", "digits", {}).hyperparameters
    assert (hp["precision"], hp["compile"]) == ("auto", "off")
    with pytest.raises(ValueError, match="compile must be one of"):
        CompiledForward(torch.nn.Linear(2, 2), "fast", CPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_fast_path_is_on():
    gpu = torch.device("cuda")
    net = torch.nn.Linear(4, 4).to(gpu)
    assert build_optimizer(net, JobSpec("mlp", "digits", {}).hyperparameters,
                           gpu).defaults["fused"] is True
    assert memory_format("cnn", gpu) is torch.channels_last
    if torch.cuda.is_bf16_supported():
        assert resolve_precision("auto", gpu) == "bf16"


def test_a_checkpoint_from_per_parameter_kernels_resumes_exactly_with_them(monkeypatch):
    """Checkpoints made before the CPU's optimizers were fused: resumed now, the run goes on
    with the kernels it started with (the optimizer's state says which), step for step the
    same as the uninterrupted run of then."""
    import models.train

    monkeypatch.setattr(models.train, "optimizer_options", lambda device: {})
    then, stopped = Steps(), Steps(stop_after=8)
    fit(JobSpec("mlp", "digits", HP), then)
    fit(JobSpec("mlp", "digits", HP), stopped)
    monkeypatch.undo()
    resumed = Steps()
    fit(JobSpec("mlp", "digits", HP), resumed, resume_from=stopped.blobs[-1])
    assert resumed.losses == {s: v for s, v in then.losses.items() if s in resumed.losses}
    assert len(resumed.losses) == 4
    assert resumed.epochs[-1]["val_loss"] == then.epochs[-1]["val_loss"]


def test_a_compiled_run_follows_the_eager_one_and_resumes_exactly():
    eager = Steps()
    fit(JobSpec("mlp", "digits", {**HP, "compile": "off"}), eager)
    compiled = Steps()
    fit(JobSpec("mlp", "digits", {**HP, "compile": "on"}), compiled)
    assert compiled.losses.keys() == eager.losses.keys()
    for step, loss in eager.losses.items():
        assert compiled.losses[step] == pytest.approx(loss, rel=1e-4, abs=1e-6)
    # compile time is reported once, as its own metric
    assert compiled.epochs[0]["compile_seconds"] > 0
    assert "compile_seconds" not in compiled.epochs[1]
    assert "compile_seconds" not in eager.epochs[0]

    # Stopped mid-epoch with a checkpoint, resumed compiled: the same ending as the
    # uninterrupted compiled run. The checkpoint holds plain weights (no compile prefix).
    stopped = Steps(stop_after=8)
    fit(JobSpec("mlp", "digits", {**HP, "compile": "on"}), stopped)
    state = load_checkpoint(stopped.blobs[-1])["model_state"]
    assert not any(k.startswith("_orig_mod") for k in state)
    resumed = Steps()
    fit(JobSpec("mlp", "digits", {**HP, "compile": "on"}), resumed,
        resume_from=stopped.blobs[-1])
    assert resumed.epochs[-1]["val_loss"] == compiled.epochs[-1]["val_loss"]
    assert resumed.losses == {s: v for s, v in compiled.losses.items() if s in resumed.losses}
