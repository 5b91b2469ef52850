"""/jobs/{id}/confusion: a classifier's validation confusion matrix, stored at each epoch's end
by the worker (db/store/confusion.py), so it can be watched as training goes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import JobDep, StoreDep
from api.errors import NOT_FOUND, answer, not_found
from api.schemas import ConfusionOut
from api.services.inference import CLASSIFIERS, require_model
from models.registry import params

router = APIRouter(prefix="/jobs", tags=["look inside a model"])

# An epoch number is at most the catalogue's most epochs a job may train.
MAX_EPOCH = int(params("mlp")["epochs"].maximum)


@router.get(
    "/{job_id}/confusion",
    response_model=ConfusionOut,
    responses=NOT_FOUND | answer(
        422, "The epoch is out of range, or the job's model is not a classifier."),
    summary="A classifier's validation confusion matrix at one epoch",
)
def get_confusion(
    job: JobDep,
    store: StoreDep,
    epoch: Annotated[int | None, Query(
        ge=1, le=MAX_EPOCH, description="Which epoch (default: the latest stored).")] = None,
) -> dict[str, Any]:
    require_model(job, CLASSIFIERS, "the confusion matrix")
    epochs, found = store.get_confusion(job.id, epoch)
    if not epochs:
        raise not_found(f"job {job.id} has no confusion matrix yet (one is stored at the end "
                        "of each epoch)")
    if found is None:
        raise not_found(f"job {job.id} has no confusion matrix for epoch {epoch} (stored: "
                        f"epochs {epochs[0]} to {epochs[-1]})")
    return {"epochs": epochs, **found}
