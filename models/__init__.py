"""Neural networks and the training core of Trainyard (pure torch).

Modules: mlp, cnn, rnn_lm (one nn.Module + config each), family (what a family's entry is
made of), registry (the family table: hyperparameters, data kind, metrics, config and size of
each family, and validation), limits (a job's size before it runs), data (datasets as tensors)
checkpoints (saving and restoring a run, and starting a fork from another's weights) and
train (``fit``, the training core).

This package file imports only the torch-free modules (importing ``models.registry`` must not
pull in torch): it holds `check_job`, the whole check of a job before it is queued.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.limits import (
    check_limits,
    dataset_device_bytes,
    dataset_items,
    estimate,
    loaded_dataset_bytes,
    shape_for_dataset,
    shape_of_data,
)
from models.registry import SpecError, check_dataset_kind, validate_hyperparameters


def check_job(model: str, hyperparameters: dict | None, dataset: str,
              kind_of: Callable[[str], str | None], *, data_dir: Path | None,
              max_parameters: int, max_activation_bytes: int,
              image_shape: tuple[int, int, int, int] | None = None) -> dict[str, Any]:
    """Check a job before it is queued, in this order: its hyperparameters against its
    family's catalogue, its dataset (`kind_of(dataset)`: the dataset's kind, None when there
    is no such dataset; asked only once the hyperparameters are valid) and its estimated size
    against the caps (`image_shape`: an uploaded image dataset's channels, height, width and
    classes). Returns the hyperparameters, filled and coerced; SpecError names the first field
    at fault."""
    hp = validate_hyperparameters(model, hyperparameters)
    kind = kind_of(dataset)
    if kind is None:
        raise SpecError(
            "dataset", f"unknown dataset {dataset!r}; GET /datasets lists the available ones")
    check_dataset_kind(model, dataset, kind)
    # An exact parameter count and a conservative activation estimate (text vocabularies are
    # bounded from above here; the worker re-checks with the real vocabulary).
    shape = shape_for_dataset(model, hp, dataset, data_dir, image_shape)
    check_limits(estimate(model, hp, shape), max_parameters, max_activation_bytes)
    return hp


def training_memory_bytes(model: str, hp: dict, dataset: str, data_dir: Path | None,
                          image_shape: tuple[int, int, int, int] | None = None,
                          summary: dict[str, Any] | None = None) -> int:
    """What a checked job (`check_job`'s hyperparameters) needs of a GPU's memory: its
    estimated state (weights, gradients, optimizer) plus peak working memory, from the same
    conservative estimate as the caps, plus its dataset, which fit() moves to the device
    (`summary`: an upload's, which says how many images or characters it holds). Recorded
    with the job, so a worker on a shared GPU claims it only when that much is free. Not
    counted: the CUDA context and kernel workspaces (TRAINYARD_GPU_MEMORY_RESERVE_BYTES
    stands for them on the worker's side)."""
    shape = shape_for_dataset(model, hp, dataset, data_dir, image_shape)
    sized = estimate(model, hp, shape)
    data = dataset_device_bytes(shape, dataset_items(model, dataset, summary))
    return int(sized.state_bytes + sized.peak_bytes + data)


def loaded_memory_bytes(model: str, hp: dict, data) -> int:
    """training_memory_bytes from the loaded data (`data`: models.data.ImageData or TextData):
    its exact vocabulary and the bytes of its tensors, where the estimate at submit had bounds
    and counts from a summary."""
    sized = estimate(model, hp, shape_of_data(data))
    return int(sized.state_bytes + sized.peak_bytes + loaded_dataset_bytes(data))
