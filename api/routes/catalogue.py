"""/models: the catalogue of trainable models and their hyperparameters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.schemas import ModelInfo
from models.registry import catalogue

router = APIRouter(prefix="/models", tags=["models"])


@router.get(
    "",
    response_model=dict[str, ModelInfo],
    summary="Models with each hyperparameter's type, default and allowed range",
)
def list_models() -> dict[str, Any]:
    return catalogue()
