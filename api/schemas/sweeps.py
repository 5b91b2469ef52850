"""Sweeps: what POST /sweeps accepts and how a sweep and its trials are answered."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas.common import (
    Device,
    JobStatus,
    StorableStr,
    check_storable_json,
)
from db.tables import PRIORITY_MAX, PRIORITY_MIN

SweepMethod = Literal["grid", "random", "tpe"]
SweepStatus = Literal["running", "succeeded", "failed", "cancelled"]


class SweepObjective(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: StorableStr | None = Field(
        default=None, max_length=200, description="A metric the model reports at each "
        "epoch's end (val_accuracy, val_loss, val_perplexity); default: its headline metric.")
    goal: Literal["max", "min"] | None = Field(
        default=None, description="Which way is better; default: the metric's (max for "
        "accuracy, min for losses and perplexity).")


class SweepEarlyStopping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["none", "median", "asha"] = Field(
        default="none", description="none; median (Optuna's MedianPruner: stop a trial "
        "whose objective is worse than the median of earlier trials at the same epoch); "
        "asha (asynchronous successive halving: at epochs min_epochs x reduction_factor^k "
        "only the best 1/reduction_factor go on).")
    min_epochs: int | None = Field(default=None, description="Epochs every trial runs before "
                                   "it may be stopped (1 to 1000; default 1).")
    reduction_factor: int | None = Field(default=None, description="asha: 2 to 10 "
                                         "(default 3).")


class SweepCreate(BaseModel):
    """What `POST /sweeps` accepts. Every searched value is checked against the model's
    catalogue as a job's hyperparameters are."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "model": "mlp", "dataset": "digits", "method": "grid",
            "hyperparameters": {"epochs": 10},
            "space": {"hidden_sizes": {"values": [[64, 64], [64, 64, 64], [256, 256]]},
                      "activation": {"values": ["relu", "sigmoid", "tanh"]}},
            "objective": {"metric": "val_accuracy", "goal": "max"},
            "max_concurrent": 2,
        }]},
    )

    name: StorableStr | None = Field(default=None, max_length=200, description="A label.")
    model: StorableStr = Field(max_length=64, description="mlp, cnn or rnn_lm.")
    dataset: StorableStr = Field(min_length=1, max_length=64,
                                 description="A dataset name from GET /datasets.")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="Values every trial shares (not searched).")
    space: dict[str, dict[str, Any]] = Field(
        description='Per searched hyperparameter: {"values": [...]} or {"low": a, "high": b, '
        '"log"?: bool, "step"?: n} (int and float hyperparameters).')
    method: SweepMethod = Field(description="grid (every combination), random or tpe.")
    objective: SweepObjective = Field(default_factory=SweepObjective)
    max_trials: int | None = Field(
        default=None, description="Trials in all: needed by random and tpe; a grid runs "
        "every combination (or this many of them). At most TRAINYARD_MAX_SWEEP_TRIALS.")
    max_concurrent: int | None = Field(
        default=None, description="Trials queued or running at once (default 4).")
    early_stopping: SweepEarlyStopping = Field(default_factory=SweepEarlyStopping)
    seed: int | None = Field(default=None, description="Seeds the sampler (default 0): the "
                             "same spec and seed propose the same trials.")
    device: Device = Field(default="auto", description="The queue its trials ask for.")
    priority: int = Field(default=0, ge=PRIORITY_MIN, le=PRIORITY_MAX,
                          description="Its trials' priority (ordinary users: at most "
                          "TRAINYARD_MAX_USER_PRIORITY).")

    @field_validator("hyperparameters", "space")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_storable_json(value)


class SweepTrial(BaseModel):
    job_id: int
    number: int = Field(description="The trial number, from 0, in launch order.")
    name: str
    status: JobStatus
    params: dict[str, Any] = Field(description="The searched hyperparameters' values.")
    objective: float | None = Field(
        description="The objective at the trial's last epoch, once it succeeded.")
    last_objective: float | None = Field(
        description="The latest objective it reported (running and pruned trials too).")
    epoch: int = Field(description="Epochs done.")
    total_epochs: int | None = Field(default=None, description="Epochs it trains in all "
                                     "(null before its first progress report).")
    pruned_at_epoch: int | None = Field(description="The epoch a pruned trial stopped at.")
    error: str | None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None


class SweepOut(BaseModel):
    id: int
    name: str
    owner: str
    model: str
    dataset: str
    hyperparameters: dict[str, Any]
    space: dict[str, Any]
    method: SweepMethod
    objective: dict[str, str] = Field(description='{"metric": name, "goal": "max" | "min"}')
    max_trials: int
    max_concurrent: int
    early_stopping: dict[str, Any]
    seed: int
    device: str
    priority: int
    status: SweepStatus
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    counts: dict[str, int] = Field(description="Its trials by status.")
    launched: int = Field(description="Trials launched so far (of max_trials).")
    best: SweepTrial | None = Field(description="The succeeded trial with the best objective.")
    trials: list[SweepTrial] = Field(
        default_factory=list, description="Every trial, by number (GET /sweeps/{id} only).")


class SweepList(BaseModel):
    items: list[SweepOut]
    total: int
    limit: int
    offset: int


class SweepImportance(BaseModel):
    importances: dict[str, float] = Field(
        description="Per searched hyperparameter, its share of the objective's variation "
        "(0 to 1, summing to 1), most important first; empty below two completed trials.")
    evaluator: str = Field(description="The evaluator that computed them.")
    trials_used: int = Field(description="The completed trials they are computed from.")
    note: str | None = Field(
        default=None, description="What to keep in mind, e.g. that pruned trials (the ones "
        "early stopping judged worse) are left out, so the figures describe the survivors.")
