"""Bodies of the requests that use a trained network: predict, generate (api/routes/inference.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import MAX_ID

MAX_PROMPT_CHARS = 20_000  # before tokenizing; models.inference caps the tokens at 2,000
MAX_SEED = 2**63 - 1


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"inputs": [[[0.0] * 8] * 8]}]})

    inputs: list[Any] = Field(
        description="Images, each H x W (one-channel models) or C x H x W, values in [0, 1], "
        "in the shape of the model's dataset (the digits set: 8 x 8).")
    checkpoint: int | None = Field(
        default=None, ge=1, le=MAX_ID,
        description="A checkpoint id of this job; default: its best by the headline metric.")


class Prediction(BaseModel):
    label: int = Field(description="The most probable class.")
    probabilities: list[float] = Field(description="One per class, summing to 1.")


class PredictOut(BaseModel):
    checkpoint: int = Field(description="The checkpoint that answered.")
    epoch: int = Field(description="Epochs its network had trained.")
    predictions: list[Prediction]


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"prompt": "The meaning of life is", "max_tokens": 200, "temperature": 0.8,
         "seed": 1}]})

    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS,
                        description="Text to continue (at most 2,000 tokens).")
    max_tokens: int = Field(default=200, ge=0, le=2000, description="Tokens to generate.")
    temperature: float = Field(default=1.0, gt=0, le=2,
                               description="Below 1 sharper, above 1 more surprising.")
    top_k: int | None = Field(default=None, ge=1, le=50_000,
                              description="Draw from the k likeliest tokens only.")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED,
                             description="The same seed gives the same text; default: a "
                             "random one, returned in the answer.")
    checkpoint: int | None = Field(
        default=None, ge=1, le=MAX_ID,
        description="A checkpoint id of this job; default: its best by the headline metric.")


class GenerateOut(BaseModel):
    checkpoint: int
    epoch: int
    text: str = Field(description="The prompt followed by the generated continuation.")
    continuation: str = Field(description="Only what the model wrote.")
    tokens: int = Field(description="Tokens generated.")
    seed: int = Field(description="The seed drawn from: send it again for the same text.")
    tokenizer: str = Field(description="char or word.")
    unknown: list[str] = Field(
        description="Prompt tokens the model's vocabulary lacks: characters dropped (char "
        "level), words read as <unk> (word level).")
