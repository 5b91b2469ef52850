"""The ORM schema: one class per table, SQLAlchemy 2 typed style, one module per concern
(jobs, what runs leave, a classifier's confusion matrices, users' things, workers,
sweeps) on one declarative base.

The Alembic migrations in `db/migrations/versions/` are the source of truth for the real
database; these modules must describe the same schema (a test compares the two with Alembic's
autogenerate and expects no difference). Change both together. Portability notes are in
`db/tables/base.py`.
"""

from db.tables.accounts import ApiKey, Dataset, DatasetChunk, WebSession
from db.tables.base import (
    DATASET_KINDS,
    JOB_STATUSES,
    LOCAL_OWNER,
    MAX_JOB_GPUS,
    NAMING_CONVENTION,
    PRIORITY_MAX,
    PRIORITY_MIN,
    Base,
    BigIntPK,
    JSONType,
    UTCDateTime,
    created_on,
    include_in_comparison,
    utcnow,
)
from db.tables.confusion import ConfusionMatrix
from db.tables.jobs import ATTEMPT_OUTCOMES, Job, JobAttempt
from db.tables.logs import JobLog
from db.tables.metrics import (
    COARSE_BLOCK_STEPS,
    COARSE_ROLLUP_BLOCKS,
    CHECKPOINT_CHUNK_BYTES,
    ROLLUP_BLOCK_STEPS,
    Checkpoint,
    CheckpointChunk,
    JobText,
    Metric,
    MetricRollup,
    MetricRollupCoarse,
    SeriesSummary,
)
from db.tables.sweeps import SWEEP_METHODS, SWEEP_STATUSES, Sweep
from db.tables.webhooks import WEBHOOK_EVENTS, Webhook, WebhookDelivery
from db.tables.workers import Worker

__all__ = [
    "ATTEMPT_OUTCOMES", "CHECKPOINT_CHUNK_BYTES", "COARSE_BLOCK_STEPS", "COARSE_ROLLUP_BLOCKS", "DATASET_KINDS",
    "JOB_STATUSES", "LOCAL_OWNER", "MAX_JOB_GPUS", "NAMING_CONVENTION", "PRIORITY_MAX",
    "PRIORITY_MIN",
    "ROLLUP_BLOCK_STEPS", "SWEEP_METHODS", "SWEEP_STATUSES", "ApiKey", "Base", "BigIntPK",
    "Checkpoint", "CheckpointChunk", "ConfusionMatrix", "Dataset", "DatasetChunk", "Job", "JobAttempt", "JobLog",
    "JobText", "JSONType",
    "Metric",
    "MetricRollup", "MetricRollupCoarse", "SeriesSummary", "Sweep", "UTCDateTime",
    "WebSession", "Worker", "created_on", "include_in_comparison", "utcnow",
    "WEBHOOK_EVENTS", "Webhook", "WebhookDelivery",
]
