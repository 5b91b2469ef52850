"""Forking a run: whether a job may start from another job's checkpoint, and what it records.

A fork names its parent (`from_checkpoint`: a job the caller may see, one of its checkpoints,
the newest by default) and the hyperparameters it changes; the others are the parent's. It must
be the parent's model family, and the checkpoint's tensors must fit the fork's model exactly:
the check loads the checkpoint and compares its tensors with the fork's model built on torch's
meta device (models/checkpoints.py), so what it refuses the worker would refuse too, and it
says why in the terms the user changed ("hidden_sizes differs: parent [256, 128], this job
[64, 64]"). A language model forks only onto the text and tokenizer its vocabulary came from
(the worker compares the vocabularies themselves).

Problems are SpecErrors naming the field at fault (from_checkpoint, from_checkpoint.checkpoint,
...), for the route to answer with 422. torch is imported only when a fork is asked for: the API
does not load it for anything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from db.store import JobRecord, Store
from models.family import DataShape
from models.limits import shape_for_dataset
from models.registry import SpecError, family

FIELD = "from_checkpoint"


def fork_hyperparameters(parent: JobRecord, model: str, changes: dict[str, Any]) -> dict[str, Any]:
    """The fork's hyperparameters, to be validated as any job's: the parent's (those its family
    still has), with `changes` over them. SpecError when the model is not the parent's."""
    if model != parent.model:
        raise SpecError(FIELD, f"model differs: parent (job {parent.id}) {parent.model}, this "
                               f"job {model}; a fork trains its parent's model family")
    known = family(model).param_map()
    inherited = {k: v for k, v in (parent.hyperparameters or {}).items() if k in known}
    return {**inherited, **changes}


def parent_columns(store: Store, parent: JobRecord, checkpoint_id: int | None, *, model: str,
                   dataset: str, hyperparameters: dict[str, Any], resume_optimizer: bool,
                   data_dir: Path | None,
                   image_shape: tuple[int, int, int, int] | None = None) -> dict[str, Any]:
    """The fork's parent_* columns, once its checkpoint (`checkpoint_id`, or the parent's newest)
    is found and fits the fork (`model`, `dataset`, validated `hyperparameters`; an uploaded
    image dataset's `image_shape` from its summary)."""
    if checkpoint_id is not None:
        found = store.get_checkpoint_data(parent.id, checkpoint_id)
        if found is None:
            raise SpecError(f"{FIELD}.checkpoint",
                            f"job {parent.id} has no checkpoint {checkpoint_id}; "
                            f"GET /jobs/{parent.id}/checkpoints lists its checkpoints")
    else:
        found = store.latest_checkpoint(parent.id)
        if found is None:
            raise SpecError(f"{FIELD}.job",
                            f"job {parent.id} has no checkpoint to fork from yet (a run writes "
                            "one at the end of each epoch)")
    record, blob = found
    problem = _misfit(blob, model, dataset, hyperparameters, resume_optimizer, data_dir,
                      image_shape)
    if problem is not None:
        raise SpecError(FIELD, f"checkpoint {record.id} of job {parent.id} (epoch "
                               f"{record.epoch}) does not fit this job: {problem}")
    return {"parent_job_id": parent.id, "parent_checkpoint_id": record.id,
            "parent_epoch": record.epoch, "parent_step": record.step,
            "resume_optimizer": resume_optimizer}


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _differs(name: str, parent: Any, ours: Any, why: str = "") -> str | None:
    if parent == ours:
        return None
    return f"{name} differs: parent {_shown(parent)}, this job {_shown(ours)}{why}"


def _misfit(blob: bytes, model: str, dataset: str, hp: dict[str, Any], resume_optimizer: bool,
            data_dir: Path | None, image_shape: tuple[int, int, int, int] | None) -> str | None:
    """What keeps checkpoint `blob` from starting this job, in words; None when it fits."""
    from models.checkpoints import load_checkpoint, mismatch  # imports torch

    try:
        ckpt = load_checkpoint(blob)
    except Exception as exc:  # noqa: BLE001 - whatever the bytes are, the answer is the same
        return f"it cannot be read ({type(exc).__name__})"
    theirs = ckpt.get("hyperparameters") or {}
    if ckpt.get("model") != model:
        return _differs("model", ckpt.get("model"), model)
    if resume_optimizer:
        problem = _differs("optimizer", theirs.get("optimizer"), hp["optimizer"],
                           " (resume_optimizer needs the parent's optimizer)")
        if problem is not None:
            return problem
    if family(model).data_kind == "text":
        # the vocabulary (the embedding's and decoder's rows) is the parent's only on the same
        # text, tokenized the same way
        why = " (a language model continues only on its parent's vocabulary)"
        checks = [("dataset", ckpt.get("dataset"), dataset),
                  ("tokenizer", theirs.get("tokenizer"), hp["tokenizer"])]
        if hp["tokenizer"] == "word":
            checks.append(("max_vocab", theirs.get("max_vocab"), hp["max_vocab"]))
        for name, parent_value, value in checks:
            problem = _differs(name, parent_value, value, why)
            if problem is not None:
                return problem
        shape = DataShape(vocab_size=int(ckpt["model_config"]["vocab_size"]))
    else:
        shape = shape_for_dataset(model, hp, dataset, data_dir, image_shape)
    return mismatch(ckpt, model, family(model).build_config(hp, shape))
