"""Request and response bodies of the HTTP API (pydantic v2).

Field names here are a contract: the dashboard, the CLI and users' scripts read them, and
none of them is deployed in step with the server. Add fields freely; rename or remove none.

Responses about a job are built from the store's JobRecord with `from_record`: a field that has
the same name as the record's is filled from it, so a job's fields are written down here only.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from core import states
from db.store import CheckpointRecord, DatasetRecord, JobRecord
from db.store.records import WorkerRecord
from db.tables import PRIORITY_MAX, PRIORITY_MIN


def check_storable(value: str) -> str:
    """Refuse text that no database column can hold, before it reaches one.

    JSON can spell both: "\\u0000" (Postgres text rejects NUL) and a lone "\\ud800" (not
    encodable as UTF-8, so neither SQLite nor Postgres can store it).
    """
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


def check_storable_json(value: Any) -> Any:
    """check_storable on every string, key or value, of a JSON document (any depth)."""
    stack = [value]  # a loop, not recursion: nesting depth is the client's choice
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            check_storable(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


StorableStr = Annotated[str, AfterValidator(check_storable)]

# The words of core/states.py, as Literals: the schema lists them inline, as it always has.
JobStatus = Literal[tuple(s.value for s in states.JobStatus)]  # type: ignore[valid-type]
Outcome = Literal[tuple(o.value for o in states.Outcome)]  # type: ignore[valid-type]
Device = Literal["auto", "cpu", "cuda"]
DatasetKind = Literal["images", "text"]


_shared_names: dict[tuple[type, type], tuple[str, ...]] = {}


def same_named(record: Any, model: type[BaseModel], skip: Iterable[str] = ()) -> dict[str, Any]:
    """The fields of `model` that `record` has under the same name (but those in `skip`)."""
    key = (model, type(record))
    names = _shared_names.get(key)
    if names is None:  # once per pair of classes: a list of 200 jobs pays for it once
        names = _shared_names[key] = tuple(n for n in model.model_fields if hasattr(record, n))
    skipped = set(skip)
    return {name: getattr(record, name) for name in names if name not in skipped}


# Job and checkpoint ids are INTEGER columns (api/deps.py MAX_ID).
_MAX_ID = 2**31 - 1


class ForkFrom(BaseModel):
    """Where a forked run starts: another job's checkpoint (`POST /jobs` `from_checkpoint`)."""

    model_config = ConfigDict(extra="forbid")

    job: int = Field(
        ge=1, le=_MAX_ID, description="The parent: a job of yours (any job for an admin) of the "
        "same model, with at least one checkpoint.",
    )
    checkpoint: int | None = Field(
        default=None, ge=1, le=_MAX_ID, description="One of the parent's checkpoints (GET "
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
QueueReasonCode = Literal["no_worker", "owner_limit", "next", "preempting", "higher_priority",
                          "workers_busy"]


class QueueReason(BaseModel):
    code: QueueReasonCode = Field(
        description="Stable, for programs: no_worker (no live worker serves its device, or "
        "only draining ones), owner_limit (its owner runs TRAINYARD_MAX_RUNNING_JOBS_PER_USER "
        "jobs already), next (a worker is idle for it, or it is first in line), preempting (a "
        "lower-priority job is being stopped to free a worker for it), higher_priority (jobs "
        "of higher priority are ahead), workers_busy (every worker that could run it is busy "
        "with the jobs ahead)."
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

    @classmethod
    def from_record(cls, job: JobRecord, **computed: Any) -> Self:
        """The answer for `job`: its same-named fields, and `computed` for the others."""
        return cls(**same_named(job, cls, skip=computed), **computed)


class JobOut(RunBase):
    hyperparameters: dict[str, Any]
    device: str
    status: JobStatus
    priority: int = Field(default=0, description="-100 to 100; a higher one is claimed first.")
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


class DatasetOut(BaseModel):
    name: str
    kind: DatasetKind
    source: Literal["builtin", "uploaded"]
    size_bytes: int | None = None
    examples: int | None = None
    description: str = ""
    owner: str | None = Field(
        default=None, description="Who uploaded it (uploads only); jobs train on their own user's."
    )

    @classmethod
    def from_builtin(cls, info: dict[str, Any]) -> Self:
        """A built-in dataset, from what models.data.builtin_datasets says of it."""
        return cls(name=info["name"], kind=info["kind"], source="builtin",
                   size_bytes=info.get("size_bytes"), examples=info.get("examples"),
                   description=info.get("description", ""))

    @classmethod
    def from_upload(cls, record: DatasetRecord) -> Self:
        return cls(name=record.name, kind=record.kind, source="uploaded",
                   size_bytes=record.size, description=record.description or "",
                   owner=record.owner)


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
    gpu_memory_bytes: int | None = Field(description="That GPU's memory; null without CUDA.")
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


# ---- sweeps ----

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
    pruned_at_epoch: int | None = Field(description="The epoch a pruned trial stopped at.")
    error: str | None
    created_at: datetime
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
