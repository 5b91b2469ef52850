"""/models: the catalogue of trainable models, their hyperparameters and the metrics they
report (with the headline one and which way is better), all from the family table."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.schemas import ModelInfo
from models.registry import catalogue

router = APIRouter(prefix="/models", tags=["models"])


@router.get(
    "",
    response_model=dict[str, ModelInfo],
    summary="Models with each hyperparameter's type, default and allowed range, and their "
    "metrics",
)
def list_models() -> dict[str, Any]:
    return catalogue()
