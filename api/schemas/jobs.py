"""Jobs: what POST /jobs and PATCH /jobs/{id} accept, and how a job is answered."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas.common import (
    MAX_ID,
    Device,
    JobStatus,
    Outcome,
    StorableStr,
    check_storable_json,
    same_named,
)
from db.store import CheckpointRecord, JobRecord
from db.tables import MAX_JOB_GPUS, PRIORITY_MAX, PRIORITY_MIN


class ForkFrom(BaseModel):
    """Where a forked run starts: another job's checkpoint (`POST /jobs` `from_checkpoint`)."""

    model_config = ConfigDict(extra="forbid")

    job: int = Field(
        ge=1, le=MAX_ID, description="The parent: a job of yours (any job for an admin) of the "
        "same model, with at least one checkpoint.",
    )
    checkpoint: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="One of the parent's checkpoints (GET "
        "/jobs/{job}/checkpoints); default: its newest. Its tensors must fit this job's model.",
    )
    resume_optimizer: bool = Field(
        default=False, description="Also start from the parent's optimizer state (Adam's "
        "moments, SGD's momentum; the optimizer must be the parent's). Default: a fresh "
        "optimizer. Either way the learning-rate schedule starts afresh at this job's lr.",
    )


class JobCreate(BaseModel):
    """What `POST /jobs` accepts. Hyperparameters are checked against the model's catalogue."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "cnn",
                    "dataset": "digits",
                    "hyperparameters": {"lr": 0.001, "epochs": 10},
                    "name": "cnn-digits-baseline",
                    "device": "auto",
                }
            ]
        },
    )

    model: StorableStr = Field(
        max_length=64, description="One of the names that GET /models lists: mlp, cnn, rnn_lm."
    )
    dataset: StorableStr = Field(
        min_length=1, max_length=64, description="A dataset name from GET /datasets."
    )
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the model's defaults; omitted keys take the default (in a "
        "fork: the parent's value).",
    )
    name: StorableStr | None = Field(
        default=None, max_length=200, description="A label for the run."
    )
    device: Device = Field(
        default="auto", description="cpu, cuda, or auto (cuda when a worker has it)."
    )
    priority: int = Field(
        default=0, ge=PRIORITY_MIN, le=PRIORITY_MAX,
        description="Higher runs first: -100 to 100. Ordinary users may give at most "
        "TRAINYARD_MAX_USER_PRIORITY (10 by default); admins the whole range.",
    )
    gpus: int = Field(
        default=1, ge=1, le=MAX_JOB_GPUS,
        description=f"1 to {MAX_JOB_GPUS}: how many GPUs the job trains on at once "
        "(DistributedDataParallel; on a CPU worker, that many processes). The global batch "
        "stays `batch_size`, split between them. It waits for a worker that has that many.",
    )
    from_checkpoint: ForkFrom | None = Field(
        default=None, description="Fork a run: start from another job's checkpoint (its "
        "weights; its hyperparameters for those not given here) instead of from scratch. The "
        "fork's steps continue the parent's, so its curves continue the parent's on the "
        "compare page; its epochs count from 1.",
    )

    @field_validator("hyperparameters")
    @classmethod
    def _storable_hyperparameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_storable_json(value)


class JobPatch(BaseModel):
    """What `PATCH /jobs/{id}` changes: a queued or running job's priority."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"priority": 5}]})

    priority: int = Field(
        ge=PRIORITY_MIN, le=PRIORITY_MAX,
        description="-100 to 100, higher runs first (ordinary users: at most "
        "TRAINYARD_MAX_USER_PRIORITY).",
    )


class Progress(BaseModel):
    epoch: int | None = None
    total_epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    eta_seconds: float | None = None

    @classmethod
    def from_record(cls, job: JobRecord) -> Self:
        return cls(
            epoch=job.epoch,
            # Known from the spec before a worker reports it: the dashboard can show "0/20".
            total_epochs=job.total_epochs or job.hyperparameters.get("epochs"),
            step=job.step,
            total_steps=job.total_steps,
            eta_seconds=job.eta_seconds,  # the store keeps it finite
        )


class ParentOut(BaseModel):
    """Where a forked run started: its parent's job and checkpoint."""

    job: int | None = Field(description="The parent job (null if it was deleted since).")
    checkpoint: int = Field(description="The parent's checkpoint the fork started from.")
    epoch: int = Field(description="The parent's epochs completed at that checkpoint.")
    step: int = Field(description="The parent's step there: the fork's first step is one more.")
    resume_optimizer: bool = Field(description="Whether the parent's optimizer state came too.")

    @classmethod
    def from_record(cls, job: JobRecord) -> Self | None:
        if job.parent_checkpoint_id is None:
            return None
        return cls(job=job.parent_job_id, checkpoint=job.parent_checkpoint_id,
                   epoch=job.parent_epoch or 0, step=job.parent_step or 0,
                   resume_optimizer=job.resume_optimizer)


class BestMetric(BaseModel):
    name: str = Field(description="val_accuracy (classifiers), val_perplexity (LM) or val_loss.")
    value: float | None


# Why a queued job waits; the first that holds, in this order (api/services/queue.py).
QueueReasonCode = Literal["no_worker", "gpus", "owner_limit", "gpu_memory", "gpu_held", "next",
                          "preempting", "higher_priority", "workers_busy"]


class QueueReason(BaseModel):
    code: QueueReasonCode = Field(
        description="Stable, for programs: no_worker (no live worker serves its device, or "
        "only draining ones), gpus (it asks for more GPUs than any live worker for its device "
        "has), owner_limit (its owner runs TRAINYARD_MAX_RUNNING_JOBS_PER_USER "
        "jobs already), gpu_memory (no GPU of a worker that could run it has its estimated "
        "memory free: it waits for other jobs on those GPUs to end), gpu_held (a job ahead of "
        "it has waited for GPU memory past TRAINYARD_GPU_BACKFILL_SECONDS, and the GPUs that "
        "could run this one are left to drain for it), next (a worker is idle for it, or it "
        "is first in line), preempting (a lower-priority job is being stopped to free a "
        "worker for it), higher_priority (jobs of higher priority are ahead), workers_busy "
        "(every worker that could run it is busy with the jobs ahead)."
    )
    message: str = Field(description="The same, as a sentence for people, with the numbers.")


class QueueInfo(BaseModel):
    position: int = Field(
        ge=1, description="1-based, among the queued jobs that could take the same workers "
        "(device the same or auto; every queued job for an auto job), by priority then age."
    )
    jobs_ahead: int = Field(ge=0, description="position - 1.")
    reason: QueueReason
    estimated_start_seconds: float | None = Field(
        ge=0, description="Seconds until a worker is expected to take it, from the ETAs of "
        "the running jobs (and the mean duration of recent jobs when more are ahead than "
        "there are workers); null when unknown."
    )


class RunBase(BaseModel):
    """What names a run in every answer about jobs; each subclass adds its own fields."""

    id: int
    name: str | None
    model: str
    dataset: str
    dataset_version: int | None = Field(
        default=None, description="An uploaded dataset's version the run trains on, fixed at "
        "submit (`name` means the newest then, `name@2` that one); null for built-in datasets.")
    dataset_sha256: str | None = Field(
        default=None, description="SHA-256 of that version's file: exactly what the run saw, "
        "kept after the version is deleted.")

    @classmethod
    def from_record(cls, job: JobRecord, **computed: Any) -> Self:
        """The answer for `job`: its same-named fields, and `computed` for the others."""
        return cls(**same_named(job, cls, skip=computed), **computed)


class JobOut(RunBase):
    hyperparameters: dict[str, Any]
    device: str
    status: JobStatus
    priority: int = Field(default=0, description="-100 to 100; a higher one is claimed first.")
    gpus: int = Field(default=1, description="How many GPUs (CPU: processes) it trains on.")
    memory_bytes: int | None = Field(
        default=None, description="Its estimated training memory per GPU (weights, "
        "gradients, optimizer state, peak working memory and the dataset): a worker on a "
        "shared GPU claims it only when that much is free. Exact from the data once a worker "
        "has loaded it.")
    progress: Progress
    attempts: int
    worker: str | None = Field(
        default=None, description="The worker running (or that last ran) it."
    )
    owner: str = Field(default="local", description="The user who submitted it (its API key's "
                       "owner; 'local' without a key).")
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    best_metric: BestMetric | None = Field(
        default=None,
        description="In GET /jobs only: the best value so far of the job's headline metric.",
    )
    queue_position: int | None = Field(
        default=None, description="In GET /jobs and GET /jobs/{id}: a queued job's position "
        "in line (queue.position); null for other jobs.",
    )
    sweep_id: int | None = Field(default=None, description="The sweep it is a trial of.")
    trial: int | None = Field(default=None, description="Its trial number in that sweep.")
    parent: ParentOut | None = Field(
        default=None, description="A forked run (POST /jobs with from_checkpoint): the job "
        "and checkpoint it started from; null for other runs.",
    )

    @classmethod
    def from_record(cls, job: JobRecord, **details: Any) -> Self:
        """The job as the API shows it: JobOut's fields from the record, progress and parent
        from its columns. What a subclass adds (JobDetail's latest metrics, attempts, infra
        failures) is per answer: it comes from `details` or stays at its default, never from
        the record.
        """
        return cls(**same_named(job, JobOut, skip=details), progress=Progress.from_record(job),
                   parent=ParentOut.from_record(job), **details)


class AttemptOut(BaseModel):
    number: int = Field(description="1 for the first run, counted per claim by a worker.")
    worker: str | None
    started_at: datetime
    ended_at: datetime | None = Field(description="null while the attempt runs.")
    outcome: Outcome | None = Field(
        description="null while it runs; worker_lost: the worker stopped heart-beating (an "
        "infrastructure failure); drained: its worker shut down or was drained and gave the "
        "job back; preempted: a job of higher priority needed the worker (checkpointed at its "
        "last step, resumed exactly later)."
    )
    resumed_from_epoch: int | None = Field(
        description="The checkpoint's epoch this attempt resumed from; null: from scratch."
    )


class JobDetail(JobOut):
    latest_metrics: dict[str, float | None] = Field(
        default_factory=dict,
        description="The most recent value of each metric (null when not finite).",
    )
    infra_failures: int = Field(
        default=0, description="Attempts lost to the infrastructure (a worker died or hung)."
    )
    attempt_history: list[AttemptOut] = Field(
        default_factory=list, description="In GET /jobs/{id}: every attempt, oldest first."
    )
    queue: QueueInfo | None = Field(
        default=None, description="In GET /jobs/{id}, for a queued job: its place in line, "
        "why it waits and when it should start; null for other jobs."
    )


class JobList(BaseModel):
    items: list[JobOut]
    total: int = Field(description="How many jobs match the filters, ignoring limit/offset.")
    limit: int
    offset: int = Field(
        description="How many matching jobs come before this page (with before/after: "
        "its position, counted by the server)."
    )


class MetricPoint(BaseModel):
    step: int
    epoch: int | None
    value: float | None = Field(description="null when the value was not finite (NaN, inf).")


class MetricSeries(BaseModel):
    series: dict[str, list[MetricPoint]]


class TextSample(BaseModel):
    epoch: int | None
    step: int | None
    name: str
    text: str


class CheckpointOut(BaseModel):
    id: int
    epoch: int
    step: int
    size: int = Field(description="Bytes.")
    sha256: str
    metrics: dict[str, Any]
    created_at: datetime | None
    download_url: str

    @classmethod
    def from_record(cls, checkpoint: CheckpointRecord, download_url: str) -> Self:
        return cls(**same_named(checkpoint, cls), download_url=download_url)
