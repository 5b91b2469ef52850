"""The rest of the service: validation errors, the catalogue, health, workers, sign-in
(datasets: api/schemas/datasets.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import (
    DatasetKind,
    same_named,
)
from db.store.records import WorkerRecord


class ValidationIssue(BaseModel):
    type: str
    loc: list[str | int] = Field(description='Where: e.g. ["query", "ids"].')
    msg: str
    ctx: dict[str, Any] | None = None


class ValidationErrorOut(BaseModel):
    """A 422 in FastAPI's validation shape, also for what only the server can check (e.g.
    GET /compare/series' cap on runs x names): `{"detail": [{"loc", "msg", "type"}]}`."""

    detail: list[ValidationIssue]


class ParamInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["int", "float", "str", "bool", "int_list"]
    default: Any
    minimum: int | float | None = None
    maximum: int | float | None = None
    exclusive_minimum: bool = Field(default=False, description="True: the value must be > minimum.")
    choices: list[Any] | None = None
    description: str = ""


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    description: str
    task: Literal["classification", "language_modeling"]
    datasets_kind: DatasetKind
    hyperparameters: dict[str, ParamInfo]
    headline_metric: str = Field(description="The metric that says how good a run is.")
    metrics: dict[str, Literal["min", "max"] | None] = Field(
        description="Each metric the family reports (gradient norms aside) and which way is "
        "better: min, max, or null where best means nothing.")


class QueueHealth(BaseModel):
    queued: int = Field(description="Jobs waiting in this queue.")
    workers: int = Field(description="Live workers serving it (seen within a lease).")


class Health(BaseModel):
    status: Literal["ok", "degraded", "error"] = Field(
        description="ok; degraded: the API answers but jobs will wait or writes fail "
        "(see problems); error: the database cannot be reached (HTTP 503).")
    database: Literal["ok", "unavailable"]
    storage: Literal["ok", "full", "unknown"]
    queues: dict[str, QueueHealth] = Field(
        description="Per device queue (cpu, cuda, auto) with jobs or workers.")
    problems: list[str] = Field(description="What is wrong, in words; empty when ok.")


class WorkerOut(BaseModel):
    """A worker process, as GET /workers shows it."""

    name: str = Field(description="Its node name (trainyard worker --name), e.g. gpu1@box: "
                      "what a job's `worker` field names.")
    host: str = Field(description="The machine it runs on.")
    pid: int = Field(description="Its process id on that machine.")
    queues: list[str] = Field(description="The device queues it serves, e.g. cpu, auto.")
    device_class: Literal["cpu", "cuda"] = Field(
        description="cuda when it serves the cuda queue (the jobs it runs count toward fair "
        "share among cuda workers), else cpu.")
    gpu_name: str | None = Field(description="Its first visible GPU; null without CUDA.")
    gpu_memory_bytes: int | None = Field(
        description="Total memory of its smallest visible GPU (what one job it runs can count "
        "on); null without CUDA.")
    gpus: int | None = Field(
        default=None, description="How many GPUs (on a CPU worker: processes) it can give one "
        "job: a job asking for more (`gpus`) waits for a worker that has them.")
    gpu_free_bytes: int | None = Field(
        default=None, description="Free memory of its fullest GPU at its latest beat; null "
        "without CUDA.")
    gpu_ids: list[str] = Field(
        default_factory=list, description="The UUIDs of the GPUs it trains on (empty without "
        "CUDA). Workers that share a GPU count each other's jobs' memory estimates when they "
        "claim.")
    torch_version: str | None
    state: Literal["idle", "busy", "draining", "lost"] = Field(
        description="idle: waiting for a job; busy: running one; draining: an admin asked it "
        "to give its job back and take no new one (until its process restarts); lost: not "
        "seen for TRAINYARD_LEASE_SECONDS (killed, hung or cut off) without stopping cleanly.")
    job_id: int | None = Field(
        description="The job it is running; null when idle, and when that job is not the "
        "caller's to see (only its owner and admins see it).")
    seen_at: datetime = Field(description="Its last heartbeat (presence beat).")
    seen_seconds_ago: float = Field(description="How long ago that was, by the server's clock.")
    started_at: datetime = Field(description="When a worker of this name was first seen.")
    jobs_done: int = Field(description="Attempts it has ended, whatever their outcome.")
    infra_failures: int = Field(
        description="Its jobs taken back because it stopped heart-beating.")
    drain_requested_at: datetime | None = Field(
        description="When an admin asked it to drain; null otherwise.")

    @classmethod
    def from_record(cls, worker: WorkerRecord, show_job: bool) -> Self:
        """The worker as the API shows it; its job only where `show_job`."""
        return cls(**same_named(worker, cls, skip=("job_id",)), host=worker.hostname,
                   job_id=worker.job_id if show_job else None)


class WorkerList(BaseModel):
    items: list[WorkerOut] = Field(description="Every worker that has not stopped cleanly, by "
                                   "name (forgotten after TRAINYARD_FORGET_WORKERS_SECONDS).")
    lease_seconds: float = Field(description="A worker not seen for this long is lost.")


class SignIn(BaseModel):
    key: str = Field(min_length=1, max_length=200, description="An API key (ty_...).")


class SessionOut(BaseModel):
    owner: str = Field(description="The user the requests act for.")
    is_admin: bool
    via: str = Field(description="key, session or local (no keys required on this address).")
    keys_required: bool
    csrf_token: str | None = Field(
        default=None, description="Send it as X-CSRF-Token with POST/PUT/DELETE (sessions)."
    )


class ErrorOut(BaseModel):
    """Errors other than validation: `{"detail": "job 42 not found"}`."""

    detail: str
