"""A run's checkpoint: what it holds, how fit() writes it, resumes from it, and starts a forked
run from another job's; and whether a checkpoint's weights fit a model.

Pure torch (and the family table). models/train.py re-exports these names; the run they save
and restore is its `_Run` (a model, its optimizer and schedule, the shuffling generator).

A checkpoint is a dict that describes itself (`format`, `model`, `model_config`,
`hyperparameters`, `dataset`, `epoch`, `batch_in_epoch`, `step`, the states, `rng`,
`metrics`; a language model's `vocab` and `tokenizer` too), written with torch.save and read
with torch.load(weights_only=True): no code runs when one is loaded.

- `restore`: resume the same job exactly (weights, optimizer, schedule, RNGs, position).
- `start_from`: a fork starts from another job's checkpoint: its weights (and, when asked, its
  optimizer state); schedule, RNGs and epochs are the fork's own, fresh; its step counter starts
  at the checkpoint's step, so the fork's curves continue its parent's.
- `mismatch`: why a checkpoint's weights do not fit a model, in words (None when they do).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from models.registry import family

if TYPE_CHECKING:
    from models.train import _Run

CHECKPOINT_FORMAT = "trainyard-checkpoint-v1"


@dataclass(frozen=True)
class Position:
    """Where a run stands: `epoch` epochs completed, `batch` batches done of the next one,
    `step` optimizer steps done in all (a fork's count from its parent's step)."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def load_checkpoint(blob: bytes) -> dict:
    ckpt = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not a {CHECKPOINT_FORMAT} checkpoint")
    return ckpt


def model_from_checkpoint(blob: bytes) -> tuple[nn.Module, dict]:
    """Rebuild the trained network (eval mode, CPU) from checkpoint bytes."""
    ckpt = load_checkpoint(blob)
    fam = family(ckpt["model"])
    model = fam.build(fam.config_type()(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model_state"])
    return model.eval(), ckpt


def checkpoint_bytes(run: _Run, at: Position, metrics: dict,
                     shuffle_state: torch.Tensor | None = None,
                     rank_rng: list[dict] | None = None) -> bytes:
    """`run` at `at`, serialized. A checkpoint taken mid-epoch (at.batch > 0) stores the
    shuffling generator as it was at the start of that epoch (`shuffle_state`): resuming draws
    the same order and skips the batches done. A multi-process run also stores each rank's own
    RNG states (`rank_rng`, models/distributed.py) as rng["ranks"]."""
    spec = run.spec
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "model": spec.model,
        "model_config": asdict(run.config),
        "hyperparameters": spec.hyperparameters,
        "dataset": spec.dataset,
        "epoch": at.epoch,  # epochs completed
        "batch_in_epoch": at.batch,  # batches done of the next epoch
        "step": at.step,
        "model_state": _to_cpu(run.model.state_dict()),
        "optimizer_state": _to_cpu(run.optimizer.state_dict()),
        "scheduler_state": _to_cpu(run.scheduler.state_dict()),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if run.device.type == "cuda" else [],
            "shuffle": run.shuffle_gen.get_state() if shuffle_state is None else shuffle_state,
        },
        "metrics": metrics,
    }
    if rank_rng:
        ckpt["rng"]["ranks"] = rank_rng
    if spec.family.data_kind == "images":  # what predict and export take (an MLP flattens it)
        ckpt["input_shape"] = [run.data.channels, run.data.height, run.data.width]
    if spec.family.data_kind == "text":
        ckpt["vocab"] = list(run.data.vocab)
        ckpt["tokenizer"] = run.data.tokenizer
    buf = io.BytesIO()
    # The non-zip format writes ~3x faster (no per-record CRC); torch.load reads both, and
    # weights_only=True works on it. It matters for small models checkpointed every epoch.
    torch.save(ckpt, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _check_same_kind(run: _Run, ckpt: dict) -> None:
    spec = run.spec
    if ckpt["model"] != spec.model:
        raise ValueError(f"checkpoint is for model {ckpt['model']!r}, not {spec.model!r}")
    if spec.family.data_kind == "text" and list(ckpt.get("vocab", [])) != list(run.data.vocab):
        raise ValueError(
            f"checkpoint vocabulary ({len(ckpt.get('vocab', []))} tokens) differs from the "
            f"dataset's ({len(run.data.vocab)} tokens): a language model continues only on the "
            "same vocabulary (the same dataset, tokenizer, max_vocab and seed)")


def restore(run: _Run, blob: bytes) -> tuple[Position, dict]:
    """Put checkpoint `blob` of the same job into `run`: weights, optimizer, schedule, the torch
    and shuffling RNGs. Returns where it stood and the metrics it carried."""
    ckpt = load_checkpoint(blob)
    _check_same_kind(run, ckpt)
    run.model.load_state_dict(ckpt["model_state"])
    run.optimizer.load_state_dict(ckpt["optimizer_state"])
    run.scheduler.load_state_dict(ckpt["scheduler_state"])
    rng = ckpt["rng"]
    torch.set_rng_state(rng["torch"])
    cuda_states = rng.get("cuda") or []
    if run.device.type == "cuda" and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    run.shuffle_gen.set_state(rng["shuffle"])
    at = Position(epoch=int(ckpt["epoch"]), batch=int(ckpt.get("batch_in_epoch", 0)),
                  step=int(ckpt["step"]))
    return at, dict(ckpt.get("metrics") or {})


def start_from(run: _Run, blob: bytes, optimizer_state: bool = False) -> Position:
    """Start a fresh `run` (a fork) from another job's checkpoint `blob`: its weights and, with
    `optimizer_state`, its optimizer's state (Adam's moments, SGD's momentum). The fork's own
    learning rate, weight decay and momentum stay; its schedule, RNGs and shuffling stay fresh.
    Returns the position to start at: epoch 0 of the fork, the checkpoint's step."""
    ckpt = load_checkpoint(blob)
    _check_same_kind(run, ckpt)
    problem = _state_mismatch(ckpt["model_state"], _shapes(run.model.state_dict()))
    if problem is not None:
        raise ValueError(f"the parent checkpoint does not fit this model: {problem}")
    run.model.load_state_dict(ckpt["model_state"])
    if optimizer_state:
        parent_optimizer = ckpt["hyperparameters"].get("optimizer")
        if parent_optimizer != run.spec.hyperparameters["optimizer"]:
            raise ValueError(f"resume_optimizer needs the parent's optimizer: the checkpoint's "
                             f"is {parent_optimizer}, this job's "
                             f"{run.spec.hyperparameters['optimizer']}")
        # load_state_dict takes the parent's hyperparameters too (lr, initial_lr, ...): the
        # fork's own are put back over them, so only the state (moments, counts) is the parent's
        own = [{k: v for k, v in g.items() if k != "params"} for g in run.optimizer.param_groups]
        run.optimizer.load_state_dict(ckpt["optimizer_state"])
        for group, settings in zip(run.optimizer.param_groups, own):
            group.update(settings)
    return Position(epoch=0, batch=0, step=int(ckpt["step"]))


# ---------------------------------------------------------------------------------------------
# does a checkpoint fit a model?


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, list[int]]:
    return {name: list(t.shape) for name, t in state.items()}


def state_shapes(model: str, config: Any) -> dict[str, list[int]]:
    """The tensor shapes of `model` built from `config`, by state_dict name (built on the meta
    device: no memory is allocated, however large the model)."""
    with torch.device("meta"):
        net = family(model).build(config)
    return _shapes(net.state_dict())


def _state_mismatch(state: Mapping[str, Any], want: Mapping[str, list[int]]) -> str | None:
    """The first tensor of checkpoint `state` that does not fit the shapes `want`."""
    have = _shapes(state)
    for name, shape in want.items():
        if name not in have:
            return f"this model has {name} {shape}, the parent checkpoint has no {name}"
    for name, shape in have.items():
        if name not in want:
            return f"the parent checkpoint has {name} {shape}, this model has no {name}"
        if want[name] != shape:
            return f"{name} is {shape} in the parent checkpoint, {want[name]} in this model"
    return None


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


def mismatch(ckpt: dict, model: str, config: Any) -> str | None:
    """None when checkpoint `ckpt`'s weights fit `model` built from `config` (same family, the
    same tensor names and shapes); else what differs, in words: each config field that changes
    the shapes ("hidden_sizes differs: parent [256, 128], this job [64, 64]"), or, when no single
    field explains it, the first tensor that does not fit."""
    if ckpt.get("model") != model:
        return f"model differs: parent {ckpt.get('model')}, this job {model}"
    problem = _state_mismatch(ckpt["model_state"], state_shapes(model, config))
    if problem is None:
        return None
    fam = family(model)
    try:
        parent = fam.config_type()(**ckpt["model_config"])
        parent_shapes = state_shapes(model, parent)
    except Exception:  # noqa: BLE001 - an older config: the tensors say it
        return problem
    ours = asdict(config)
    differing = []
    for name, value in ours.items():
        before = getattr(parent, name, None)
        if value == before:
            continue
        try:
            shapes = state_shapes(model, dataclasses.replace(parent, **{name: value}))
        except Exception:  # noqa: BLE001 - a combination the family refuses: it matters
            shapes = None
        if shapes != parent_shapes:
            differing.append(f"{name} differs: parent {_shown(before)}, this job {_shown(value)}")
    return "; ".join(differing) if differing else problem
