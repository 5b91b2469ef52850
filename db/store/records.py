"""What the store returns: plain frozen dataclasses, never ORM objects, so callers cannot lazy-load
or hold a session open by accident.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from core.states import FINISHED
from db.tables import LOCAL_OWNER


@dataclass(frozen=True)
class Record:
    """What the store returns: an immutable snapshot of a row, never a live ORM object."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JobRecord(Record):
    id: int
    name: str
    model: str
    dataset: str
    hyperparameters: dict[str, Any]
    device: str
    status: str
    attempts: int
    error: str | None
    epoch: int
    total_epochs: int | None
    step: int
    total_steps: int | None
    eta_seconds: float | None
    worker: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    updated_at: dt.datetime | None = None
    infra_failures: int = 0
    enqueued_at: dt.datetime | None = None
    idempotency_key: str | None = None
    owner: str = LOCAL_OWNER
    priority: int = 0
    device_class: str | None = None
    preempt_requested_at: dt.datetime | None = None
    # a sweep's trial (migration 0009)
    sweep_id: int | None = None
    trial: int | None = None
    # a forked run: where its weights came from (migration 0009)
    parent_job_id: int | None = None
    parent_checkpoint_id: int | None = None
    parent_epoch: int | None = None
    parent_step: int | None = None
    resume_optimizer: bool = False
    # GPUs and memory (migration 0011)
    gpus: int = 1
    memory_bytes: int | None = None
    memory_wait_since: dt.datetime | None = None  # first passed over for GPU memory (0018)
    # an upload's exact version (migration 0013)
    dataset_version: int | None = None
    dataset_sha256: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class CheckpointRecord(Record):
    id: int
    job_id: int
    epoch: int
    step: int
    size: int
    sha256: str
    metrics: dict[str, Any]
    created_at: dt.datetime


@dataclass(frozen=True)
class DatasetRecord(Record):
    """One version of an upload, without its bytes (`iter_dataset_chunks` reads them)."""

    id: int
    name: str
    kind: str
    size: int
    sha256: str
    description: str
    created_at: dt.datetime
    owner: str = LOCAL_OWNER
    version: int = 1
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """How a job names exactly this version: `name@2`."""
        return f"{self.name}@{self.version}"

    @property
    def image_shape(self) -> tuple[int, int, int, int] | None:
        return summary_image_shape(self.kind, self.summary)


def summary_image_shape(kind: str, summary: dict[str, Any] | None
                        ) -> tuple[int, int, int, int] | None:
    """(channels, height, width, classes) of an uploaded image dataset from its summary (what
    ingest/ found), for sizing a job before its data is loaded; None for text or no summary."""
    if kind != "images" or not summary:
        return None
    try:
        return (int(summary["channels"]), int(summary["height"]), int(summary["width"]),
                len(summary["classes"]))
    except (KeyError, TypeError, ValueError):
        return None


def split_ref(dataset: str) -> tuple[str, int | None]:
    """A stored dataset name as (name, version): `name@2` -> (name, 2), `name` -> (name, None)."""
    name, _, version = dataset.partition("@")
    return (name, int(version)) if version.isdigit() else (dataset, None)


@dataclass(frozen=True)
class ApiKeyRecord(Record):
    id: int
    owner: str
    prefix: str
    is_admin: bool
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


def record_of(cls: type, row: Any) -> Any:
    """Build a record dataclass from an ORM object or a result row with the same names."""
    return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class WorkerRecord(Record):
    """A worker process as GET /workers shows it. `state` is idle, busy, draining or lost
    (not seen for a lease: derived when read, never stored); `job_owner` is the owner of
    `job_id`, so the API can hide another user's job."""

    name: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    device_class: str
    gpu_name: str | None
    gpu_memory_bytes: int | None
    torch_version: str | None
    state: str
    job_id: int | None
    job_owner: str | None
    started_at: dt.datetime
    seen_at: dt.datetime
    seen_seconds_ago: float
    jobs_done: int
    infra_failures: int
    drain_requested_at: dt.datetime | None
    gpus: int | None = None  # how many GPUs (CPU: processes) it can give one job
    gpu_free_bytes: int | None = None  # free memory of its fullest GPU at its latest beat
    gpu_ids: tuple[str, ...] = ()  # the UUIDs of the GPUs it trains on
