"""The ORM schema: one class per table, SQLAlchemy 2 typed style.

The Alembic migrations in `db/migrations/versions/` are the source of truth for the real
database; this module must describe the same schema (a test compares the two with Alembic's
autogenerate and expects no difference). Change both together.

Portability notes (SQLite is the embedded default, Postgres the served one):
- JSON columns are `JSON` on SQLite and `JSONB` on Postgres.
- Big-integer primary keys are `INTEGER` on SQLite, because only `INTEGER PRIMARY KEY`
  autoincrements there.
- Datetimes are stored in UTC and always come back timezone-aware (`UTCDateTime`), although
  SQLite itself keeps no zone.
- Constraint and index names come from the naming convention below, so migrations can
  refer to them by name on every backend.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
# Owner of what is created without an API key (embedded mode on loopback, keyless).
LOCAL_OWNER = "local"
DATASET_KINDS = ("images", "text")

# Portable column types.
JSONType = JSON().with_variant(JSONB(), "postgresql")
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC that is always returned timezone-aware.

    Naive values given to the database are taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite keeps no zone: we only ever write UTC
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Job(Base):
    """A training request and its life: spec, status, progress and timestamps."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(JOB_STATUSES)})", name="status"),
        # Newest-first pages filtered by status or model: WHERE status = ? ORDER BY id DESC.
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_model_id", "model", "id"),
        # The reconciler's scan for queued jobs whose broker message may be lost (0003).
        Index("ix_jobs_status_enqueued_at", "status", "enqueued_at"),
        # A user's pages and their count of queued jobs (the per-user cap): 0005.
        Index("ix_jobs_owner_status_id", "owner", "status", "id"),
        # Idempotency keys are the client's: two users may pick the same one (0005).
        UniqueConstraint("owner", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(50))
    dataset: Mapped[str] = mapped_column(String(200))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    device: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    total_epochs: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Fault tolerance (migration 0003): attempts lost to the infrastructure, when the job was
    # last sent to the broker, and the Idempotency-Key of the request that created it.
    infra_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    enqueued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # The user (API key owner) who submitted it; LOCAL_OWNER when no key was used (0005).
    owner: Mapped[str] = mapped_column(String(100), default=LOCAL_OWNER, server_default=LOCAL_OWNER)


ATTEMPT_OUTCOMES = ("succeeded", "failed", "cancelled", "worker_lost", "drained")


class JobAttempt(Base):
    """One claim of a job by a worker: who ran it, when, how it ended, where it resumed.

    `outcome` is NULL while the attempt runs; `resumed_from_epoch` is the epoch of the
    checkpoint the attempt started from (NULL: from scratch).
    """

    __tablename__ = "job_attempts"
    __table_args__ = (UniqueConstraint("job_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(16))
    resumed_from_epoch: Mapped[int | None] = mapped_column(Integer)


class Metric(Base):
    """One point of one metric series; unique per (job, name, step).

    `value` is NULL for a non-finite number (NaN or infinity), which neither SQLite nor JSON
    can carry; `time` is seconds since the Unix epoch when the point was recorded.
    """

    __tablename__ = "metrics"
    __table_args__ = (
        UniqueConstraint("job_id", "name", "step"),
        # Covering index for reading many series in one pass (Store.bulk_series): migration 0002.
        Index(
            "ix_metrics_job_id_name_step_epoch_value", "job_id", "name", "step", "epoch", "value"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Float)
    time: Mapped[float] = mapped_column(Float)


# Steps per block of `metric_rollups`: a 10,000-step series is ~625 summary rows.
ROLLUP_BLOCK_STEPS = 16
# Blocks of `metric_rollups` per block of `metric_rollups_coarse` (128 steps): a 10,000-step
# series is ~79 coarse rows, for the many-runs comparisons that ask few points per curve.
COARSE_ROLLUP_BLOCKS = 8
COARSE_BLOCK_STEPS = ROLLUP_BLOCK_STEPS * COARSE_ROLLUP_BLOCKS


class _RollupColumns:
    """The columns of a rollup table: one metric series over one block of steps and one epoch.
    `n` counts the non-NULL values that `total`, `low` and `high` summarise; `last_step` is
    the block's last step in that epoch."""

    # Clustered by its key on SQLite, so reading a series' blocks is one range scan.
    __table_args__ = {"sqlite_with_rowid": False}

    job_id: Mapped[int] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    block: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_step: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)
    total: Mapped[float | None] = mapped_column(Float)
    low: Mapped[float | None] = mapped_column(Float)
    high: Mapped[float | None] = mapped_column(Float)


class MetricRollup(_RollupColumns, Base):
    """A summary of one metric series over one block of ROLLUP_BLOCK_STEPS steps and one epoch
    (block = step // 16).

    Derived from `metrics` and rewritten, for the blocks a batch touches, in the same
    transaction as the batch (Store.add_metrics): long curves are downsampled from these
    rows, 16 times fewer than the points, instead of from every point (Store.bulk_series).
    """

    __tablename__ = "metric_rollups"


class MetricRollupCoarse(_RollupColumns, Base):
    """The same summary over blocks of COARSE_BLOCK_STEPS steps (block = step // 128), derived
    from `metric_rollups` in the same transaction: very long curves asked for few points
    (a thousand runs on one chart) are read from these, 8 times fewer rows again."""

    __tablename__ = "metric_rollups_coarse"


class Checkpoint(Base):
    """A training checkpoint; the bytes live in the database (bytea on Postgres)."""

    __tablename__ = "checkpoints"
    __table_args__ = (Index("ix_checkpoints_job_id_step", "job_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Dataset(Base):
    """A user-uploaded dataset (built-in ones are files, not rows)."""

    __tablename__ = "datasets"
    __table_args__ = (
        # Names are per owner: a taken name must not tell one user what another uploaded.
        UniqueConstraint("owner", "name"),
        CheckConstraint(f"kind IN ({_in(DATASET_KINDS)})", name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    owner: Mapped[str] = mapped_column(String(100), default=LOCAL_OWNER, server_default=LOCAL_OWNER)


class ApiKey(Base):
    """An API key: only its SHA-256 is stored; the key itself is shown once, at creation.

    `owner` is the user the key acts for (several keys may share one); an admin key sees and
    may cancel everyone's jobs. A revoked key stays for the record but opens nothing.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, to tell keys apart
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class WebSession(Base):
    """A dashboard sign-in: the cookie carries a random token whose SHA-256 is the key here.

    `csrf_token` must come back in the X-CSRF-Token header of every state-changing request
    made with the cookie. Revoking the API key ends its sessions.
    """

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class JobText(Base):
    """A text artifact of a job, e.g. the language model's sampled text after an epoch."""

    __tablename__ = "job_texts"
    __table_args__ = (Index("ix_job_texts_job_id_step", "job_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Worker(Base):
    """A worker process that is, or was, serving queues: its presence beat.

    Each worker upserts its row every `heartbeat_seconds` while its consumer runs and marks it
    stopped when it shuts down; a row not seen for a lease is a dead worker. `/healthz` reads
    these rows to tell whether each queue with jobs has someone serving it.
    """

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # celery node name
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[str] = mapped_column(String(200))  # comma-separated, e.g. "cpu,auto"
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    stopped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
