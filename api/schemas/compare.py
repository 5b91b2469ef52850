"""Comparing runs: GET /compare and GET /compare/series."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.schemas.common import (
    JobStatus,
)
from api.schemas.jobs import RunBase


class CompareRun(RunBase):
    status: JobStatus
    hyperparameters: dict[str, Any]
    final: dict[str, float | None] = Field(description="Each metric's value at its last step.")
    best: dict[str, float | None] = Field(
        description="Each metric's best value: lowest for losses/perplexity, highest otherwise."
    )


class CompareOut(BaseModel):
    runs: list[CompareRun]
    differing: list[str] = Field(
        description="Keys whose values differ between the runs: model, dataset and hyperparameters."
    )


class SeriesEpochs(BaseModel):
    epoch: list[int]
    mean: list[float | None] = Field(description="The mean of the epoch's points.")


class BulkSeries(BaseModel):
    """One downsampled series as columns: point i is (step[i], epoch[i], value[i])."""

    step: list[int]
    epoch: list[int]
    value: list[float | None]
    final: float | None = Field(description="The value at the last step (exact).")
    best: float | None = Field(
        description="Lowest for losses/perplexity, highest for accuracy, else the final value."
    )
    epochs: SeriesEpochs


class SeriesRun(RunBase):
    status: JobStatus
    device: str
    hyperparameters: dict[str, Any]
    label: str = Field(
        description="The run named by the settings that differ between the runs compared, "
        "e.g. 'lr=0.01, activation=sigmoid' (its name when nothing differs)."
    )
    created_at: datetime
    metric_names: list[str] = Field(description="Every metric the run has recorded.")


class CompareSeriesOut(BaseModel):
    runs: list[SeriesRun]
    differing: list[str]
    names: list[str] = Field(description="The metric names asked for.")
    max_points: int
    series: dict[str, dict[str, BulkSeries]] = Field(
        description="{job id: {metric name: series}}, only for the series that exist."
    )
