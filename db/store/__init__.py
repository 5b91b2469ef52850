"""The one gateway to SQL: every query of Trainyard lives in `Store`.

`Store` is composed of one part per concern, each in its own module of this package:

- `base`: engine, sessions, migrations (`StoreBase`)
- `jobs`: submission, state transitions, claiming, recovery, attempts, job lists
- `metrics`: metric writes with their block summaries, per-job reads
- `series`: many runs' curves at once, downsampled in the database (the compare page)
- `summaries`: finished runs' curves stored once computed, and the reconciler's pass that
  precomputes them
- `artifacts`: sampled texts, checkpoints
- `datasets`: users' uploads, versioned, their bytes in chunks; the owner's stored bytes
- `confusion`: a classifier's validation confusion matrix per epoch (GET /jobs/{id}/confusion)
- `scheduling`: which queued job a worker claims next (priority, fair share, age), priorities
- `preemption`: which running jobs give their worker to a queued job of higher priority
- `queue`: a queued job's place in line and what it waits for (GET /jobs/{id}'s `queue`)
- `workers`: what each worker is and does, for the health report, the scheduler, GET /workers
- `keys`: API keys and dashboard sessions
- `sweeps`: sweeps, the launch of their trials, and what a sweep decision reads
- `logs`: a job's log lines, in order, bounded per job (GET /jobs/{id}/logs)
- `lifecycle`: deleting finished jobs (one, by filter, retention), usage, space reclaim
- `webhooks`: users' webhooks, the outbox of their deliveries, the senders' claims
- `telemetry`: the figures of GET /metrics (Prometheus), read at scrape time
- `records` and `errors`: what the store returns and raises

Each public method is one short unit of work in its own transaction (`session_scope`), and
returns plain frozen dataclasses or dicts, never ORM objects, so callers cannot lazy-load or
hold a session open by accident.

Job states: queued -> running -> succeeded | failed | cancelled | pruned, plus running -> queued for the
recovery path, drains and preemption (`requeue_job`). Every transition is one conditional UPDATE guarded by the
current status (`... WHERE id = :id AND status = 'queued'`), so two workers racing for the
same job cannot both win: the database serialises the updates and only the first matches.
"""

from __future__ import annotations

from db.store.artifacts import ArtifactsMixin
from db.store.base import MIGRATIONS_DIR, StoreBase
from db.store.confusion import ConfusionMixin
from db.store.datasets import DatasetsMixin
from db.store.errors import (
    Conflict,
    DatasetQuotaExceeded,
    InvalidTransition,
    NotFound,
    QuotaExceeded,
    StoreError,
    describe_db_error,
    is_connection_error,
    is_storage_full,
)
from db.store.jobs import JobsMixin
from db.store.keys import KeysMixin
from db.store.lifecycle import LifecycleMixin
from db.store.logs import LogsMixin
from db.store.metrics import MetricsMixin
from db.store.preemption import PreemptionMixin
from db.store.queue import QueueMixin
from db.store.records import ApiKeyRecord, CheckpointRecord, DatasetRecord, JobRecord
from db.store.scheduling import SchedulingMixin
from db.store.series import SeriesMixin
from db.store.summaries import SummariesMixin
from db.store.sweeps import SweepRecord, SweepsMixin, TrialRecord
from db.store.telemetry import TelemetryMixin
from db.store.webhooks import WebhooksMixin
from db.store.workers import WorkersMixin
from db.tables import JOB_STATUSES, LOCAL_OWNER


class Store(
    JobsMixin,
    SchedulingMixin,
    PreemptionMixin,
    QueueMixin,
    MetricsMixin,
    SeriesMixin,
    SummariesMixin,
    ArtifactsMixin,
    DatasetsMixin,
    ConfusionMixin,
    WorkersMixin,
    KeysMixin,
    SweepsMixin,
    LogsMixin,
    LifecycleMixin,
    WebhooksMixin,
    TelemetryMixin,
    StoreBase,
):
    """Database access for jobs, metrics, texts, checkpoints, datasets, workers and keys.

    `Store(url)` opens an engine (see `db.session.make_engine`); call `migrate()` once at
    start-up. A Store is safe to share between threads; each call uses its own session.
    """


__all__ = [
    "JOB_STATUSES",
    "LOCAL_OWNER",
    "MIGRATIONS_DIR",
    "ApiKeyRecord",
    "CheckpointRecord",
    "Conflict",
    "DatasetQuotaExceeded",
    "DatasetRecord",
    "InvalidTransition",
    "JobRecord",
    "NotFound",
    "QuotaExceeded",
    "Store",
    "StoreError",
    "SweepRecord",
    "TrialRecord",
    "describe_db_error",
    "is_connection_error",
    "is_storage_full",
]
