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

from core.states import JobStatus, Outcome

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JOB_STATUSES = tuple(JobStatus)  # the CHECK constraint of jobs.status
# A job's priority: higher runs first (POST /jobs, PATCH /jobs/{id}).
PRIORITY_MIN, PRIORITY_MAX = -100, 100
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
    """A training request and its life: spec, status, progress and timestamps.

    Created queued by POST /jobs; the worker that claims it moves it on and reports its
    progress here. Its points, checkpoints, texts and attempts are rows of other tables that
    refer to it by `job_id`.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(JOB_STATUSES)})", name="status"),
        Index("ix_jobs_status_id", "status", "id", info={"serves": (
            "Job lists filtered by status, newest first, by offset or keyset pages (GET /jobs"
            "?status=: WHERE status = ? ORDER BY id DESC, id < ?); the running jobs (the "
            "reconciler's scan for lost workers) and the queued ones, counted per queue for "
            "/healthz.")}),
        Index("ix_jobs_model_id", "model", "id", info={"serves": (
            "Job lists filtered by model, newest first (GET /jobs?model=).")}),
        Index("ix_jobs_status_enqueued_at", "status", "enqueued_at", info={"serves": (
            "The reconciler's scan for queued jobs whose broker message may be lost: "
            "WHERE status = 'queued' AND enqueued_at < ? (0003).")}),
        Index("ix_jobs_status_priority_id", "status", "priority", "id", info={"serves": (
            "The scheduler: the queued jobs in the order they run (WHERE status = 'queued' "
            "ORDER BY priority DESC, ..., id), a queued job's place in that order (the jobs "
            "of higher priority, or the same and older), and the running jobs by priority "
            "for preemption (0008).")}),
        Index("ix_jobs_status_priority_owner_id", "status", "priority", "owner", "id",
              info={"serves": (
                  "The claim (db/store/scheduling.py): the top priority level of the queue, "
                  "the owners with jobs at that level (a skip scan, one seek per owner) and "
                  "each one's oldest job, so a claim costs a few seeks however long the "
                  "queue (0008).")}),
        CheckConstraint(f"priority BETWEEN {PRIORITY_MIN} AND {PRIORITY_MAX}", name="priority"),
        Index("ix_jobs_owner_status_id", "owner", "status", "id", info={"serves": (
            "A user's own job lists, newest first (WHERE owner = ? [AND status = ?] ORDER BY "
            "id DESC), and the count of their queued jobs held against the per-user queue cap "
            "on POST /jobs (0005).")}),
        # Idempotency keys are the client's: two users may pick the same one (0005).
        UniqueConstraint("owner", "idempotency_key", info={"serves": (
            "One job per owner and Idempotency-Key: a retried POST /jobs finds the job the "
            "first request created. NULL keys never collide.")}),
        {"info": {"pk_serves": (
            "One job by id (GET /jobs/{id}; every status change is UPDATE ... WHERE id = ?), "
            "and the unfiltered job list, newest first (ORDER BY id DESC, keyset pages "
            "id < ?).")}},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, doc=(
        "The job's number, as in /jobs/{id}. Ids only grow: a larger id was submitted later."))
    name: Mapped[str] = mapped_column(String(200), doc=(
        "A label for the run: the submitter's, else `<model>-<dataset>-<id>`."))
    model: Mapped[str] = mapped_column(String(50), doc=(
        "The model family: `mlp`, `cnn` or `rnn_lm` (GET /models lists them)."))
    dataset: Mapped[str] = mapped_column(String(200), doc=(
        "The dataset it trains on: a built-in one (a file, no row), else the owner's upload "
        "(`datasets.name` with the same `owner`)."))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONType, doc=(
        "Every hyperparameter of the run (`lr`, `epochs`, `batch_size`, ...), a JSON object "
        "with the model's defaults filled in for those not given."))
    device: Mapped[str] = mapped_column(String(16), doc=(
        "The queue it asked for: `cpu`, `cuda`, or `auto` (CUDA when a worker has it)."))
    status: Mapped[str] = mapped_column(String(16), doc=(
        "Where it is: `queued`, `running`, `succeeded`, `failed` or `cancelled`."))
    attempts: Mapped[int] = mapped_column(Integer, default=0, doc=(
        "How many times a worker has claimed it: its rows in `job_attempts`. 0 until it "
        "first runs."))
    error: Mapped[str | None] = mapped_column(Text, doc=(
        "Why it failed, in words for users (no SQL, no traceback); NULL otherwise."))
    epoch: Mapped[int] = mapped_column(Integer, default=0, doc=(
        "Progress: the epoch being trained, from 1 (at an epoch's end, the epochs completed); "
        "0 before training starts."))
    total_epochs: Mapped[int | None] = mapped_column(Integer, doc=(
        "Epochs the run trains in all; NULL until its first progress report."))
    step: Mapped[int] = mapped_column(Integer, default=0, doc=(
        "Progress: optimizer steps done so far; 0 before training starts."))
    total_steps: Mapped[int | None] = mapped_column(Integer, doc=(
        "Optimizer steps the whole run takes; NULL until its first progress report."))
    eta_seconds: Mapped[float | None] = mapped_column(Float, doc=(
        "Estimated seconds of training left, as of `updated_at`; 0 once succeeded; NULL "
        "while unknown."))
    worker: Mapped[str | None] = mapped_column(String(200), doc=(
        "The worker running it, or that ran it last (`workers.name`); NULL before its first "
        "attempt and while queued again after a lost or drained one."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When it was submitted."))
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When its latest attempt began; NULL until a worker first claims it."))
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When it became succeeded, failed or cancelled; NULL before (a new attempt clears it)."))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "Its worker's last sign of life while running (a heartbeat or a progress report); the "
        "reconciler takes back a running job whose heartbeat is older than the lease. NULL "
        "while queued again after a lost or drained attempt."))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When the service last changed the row."))
    # Fault tolerance (migration 0003).
    infra_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0", doc=(
        "Attempts lost to the infrastructure (a worker that died or stopped heart-beating), "
        "apart from failures of the job's own; past the limit the job fails."))
    enqueued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When `run job <id>` was last sent to the broker; the reconciler sends a job queued "
        "for longer than a grace period again."))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), doc=(
        "The Idempotency-Key header of the POST /jobs that created it; NULL without one."))
    # Ownership (migration 0005).
    owner: Mapped[str] = mapped_column(
        String(100), default=LOCAL_OWNER, server_default=LOCAL_OWNER, doc=(
            "The user who submitted it (`api_keys.owner` of the key used); `local` when no key "
            "was used."))
    # Scheduling (migration 0008).
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0", doc=(
        "-100 to 100, default 0: a queued job of higher priority is claimed first; among "
        "equals the owner with the fewest running jobs, then the oldest job."))
    device_class: Mapped[str | None] = mapped_column(String(8), doc=(
        "The kind of worker that claimed it last, `cpu` or `cuda` (fair share counts each "
        "owner's running jobs per class); NULL before its first claim."))
    preempt_requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "Set while running when a job of higher priority needs its worker: the worker stops it "
        "at its next step, checkpointed, and queues it again (outcome `preempted`)."))


ATTEMPT_OUTCOMES = tuple(Outcome)  # the CHECK constraint of job_attempts.outcome


class JobAttempt(Base):
    """One claim of a job by a worker: who ran it, when, how it ended, where it resumed.

    `outcome` is NULL while the attempt runs; `resumed_from_epoch` is the epoch of the
    checkpoint the attempt started from (NULL: from scratch).
    """

    __tablename__ = "job_attempts"
    __table_args__ = (
        UniqueConstraint("job_id", "number", info={"serves": (
            "A job's attempts in order (GET /jobs/{id}: WHERE job_id = ? ORDER BY number), and "
            "ending the current one when the job finishes or goes back to the queue "
            "(WHERE job_id = ? AND number = ?).")}),
        {"info": {"pk_serves": "Row identity only: attempts are found by (job_id, number)."}},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, doc=(
        "Row id."))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), doc=(
        "The job it is an attempt of."))
    number: Mapped[int] = mapped_column(Integer, doc=(
        "1 for the job's first claim, then 2, 3, ...: the job's `attempts` when it was "
        "claimed."))
    worker: Mapped[str | None] = mapped_column(String(200), doc=(
        "The worker that claimed it (`workers.name`)."))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When the worker claimed the job."))
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When the attempt ended; NULL while it runs."))
    outcome: Mapped[str | None] = mapped_column(String(16), doc=(
        "How it ended: `succeeded`, `failed` or `cancelled` (the job's final status), "
        "`worker_lost` (its worker died or stopped heart-beating: the job was queued again, "
        "or failed past the limit), `drained` (its worker shut down or was drained and gave "
        "the job back) or `preempted` (a job of higher priority needed the worker: the job "
        "was queued again, checkpointed at its last step); NULL while it runs."))
    resumed_from_epoch: Mapped[int | None] = mapped_column(Integer, doc=(
        "The epochs completed in the checkpoint it started from; NULL: from scratch."))


class Metric(Base):
    """One point of one metric series; unique per (job, name, step).

    `value` is NULL for a non-finite number (NaN or infinity), which neither SQLite nor JSON
    can carry; `time` is seconds since the Unix epoch when the point was recorded.
    """

    __tablename__ = "metrics"
    __table_args__ = (
        UniqueConstraint("job_id", "name", "step", info={"serves": (
            "One point per (job, name, step): what the metric upsert conflicts on, so a resumed "
            "run that repeats steps replaces its points instead of adding duplicates.")}),
        Index(
            "ix_metrics_job_id_name_step_epoch_value", "job_id", "name", "step", "epoch", "value",
            info={"serves": (
                "Every read of points: a job's curves in step order (GET /jobs/{id}/metrics), "
                "many runs' short curves and the last points of long ones (GET "
                "/compare/series), the value at a series' last step (GET /compare), the best "
                "metric in GET /jobs, and metric names (a loose index scan). It holds every "
                "column these read, so they are range scans of the index alone, with no "
                "lookup of the table row per point (0002).")},
        ),
        {"info": {"pk_serves": "Row identity only: points are found by (job_id, name, step)."}},
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True, doc=(
        "Row id."))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), doc=(
        "The job that reported it."))
    name: Mapped[str] = mapped_column(String(200), doc=(
        "The metric. Each step: `train_loss` (mean cross-entropy of the step's batch, in "
        "nats), `lr` (the learning rate used), `samples_per_s` (language models: "
        "`tokens_per_s`; training throughput). Each epoch: `val_loss` (nats), `val_accuracy` "
        "(a fraction, 0 to 1; classifiers) or `val_perplexity` (exp of `val_loss`; language "
        "models), and `grad_norm/<layer>` (L2 norm of that layer's gradients at the epoch's "
        "last step)."))
    step: Mapped[int] = mapped_column(Integer, doc=(
        "The optimizer step it was measured at, from 1; a per-epoch metric is at the epoch's "
        "last step."))
    epoch: Mapped[int] = mapped_column(Integer, doc=(
        "The epoch it belongs to, from 1."))
    value: Mapped[float | None] = mapped_column(Float, doc=(
        "Its value; NULL for NaN or infinity."))
    time: Mapped[float] = mapped_column(Float, doc=(
        "When it was measured, by the worker's clock: seconds since the Unix epoch (a float, "
        "not a timestamp)."))


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
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True, doc=(
            "The job whose metric it summarises."))
    name: Mapped[str] = mapped_column(String(200), primary_key=True, doc=(
        "The metric, as in `metrics.name`."))
    block: Mapped[int] = mapped_column(Integer, primary_key=True, doc=(
        "Which block of steps: `step / 16` (integer division) in `metric_rollups`, "
        "`step / 128` in `metric_rollups_coarse`."))
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True, doc=(
        "The epoch of the points it summarises: a block that spans an epoch's end has a row "
        "for each epoch."))
    last_step: Mapped[int] = mapped_column(Integer, doc=(
        "The highest step of those points."))
    n: Mapped[int] = mapped_column(Integer, doc=(
        "How many of those points have a value (NULL values are not counted)."))
    total: Mapped[float | None] = mapped_column(Float, doc=(
        "Sum of those values, so `total / n` is their mean; NULL when `n` is 0."))
    low: Mapped[float | None] = mapped_column(Float, doc=(
        "The lowest of those values; NULL when `n` is 0."))
    high: Mapped[float | None] = mapped_column(Float, doc=(
        "The highest of those values; NULL when `n` is 0."))


class MetricRollup(_RollupColumns, Base):
    """A summary of one metric series over one block of 16 steps (ROLLUP_BLOCK_STEPS) and one
    epoch (block = step // 16).

    Derived from `metrics` and rewritten, for the blocks a batch touches, in the same
    transaction as the batch (Store.add_metrics): long curves are downsampled from these
    rows, 16 times fewer than the points, instead of from every point (Store.bulk_series).
    """

    __tablename__ = "metric_rollups"
    __table_args__ = {**_RollupColumns.__table_args__, "info": {"pk_serves": (
        "What add_metrics' upsert of block summaries conflicts on, and a series' blocks in "
        "order as one range scan (the table is clustered on it on SQLite): long curves of "
        "GET /compare/series, and whether a series is long at all.")}}


class MetricRollupCoarse(_RollupColumns, Base):
    """The same summary over blocks of 128 steps (COARSE_BLOCK_STEPS; block = step // 128),
    derived from `metric_rollups` in the same transaction: very long curves asked for few
    points (a thousand runs on one chart) are read from these, 8 times fewer rows again."""

    __tablename__ = "metric_rollups_coarse"
    __table_args__ = {**_RollupColumns.__table_args__, "info": {"pk_serves": (
        "The same for the coarse blocks: very long curves asked for few points "
        "(GET /compare/series), and each series' last step, lowest and highest value for the "
        "final and best values of GET /compare.")}}


class Checkpoint(Base):
    """A training checkpoint; the bytes live in the database (bytea on Postgres).

    Written at the end of every epoch (and when a drained worker stops mid-epoch); only a job's
    newest few are kept (TRAINYARD_CHECKPOINTS_KEEP, 5 by default).
    """

    __tablename__ = "checkpoints"
    __table_args__ = (
        Index("ix_checkpoints_job_id_step", "job_id", "step", info={"serves": (
            "A job's checkpoints in training order (GET /jobs/{id}/checkpoints), the newest "
            "one to resume from when a worker claims the job (ORDER BY step DESC LIMIT 1), and "
            "deleting all but the newest few.")}),
        {"info": {"pk_serves": (
            "One checkpoint by id, with its job "
            "(GET /jobs/{id}/checkpoints/{checkpoint_id}/download).")}},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, doc=(
        "The checkpoint's number, as in its download URL."))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), doc=(
        "The job it was taken of."))
    epoch: Mapped[int] = mapped_column(Integer, doc=(
        "Epochs completed when it was taken: resuming from it starts epoch `epoch + 1` (or the "
        "rest of it, for one taken mid-epoch)."))
    step: Mapped[int] = mapped_column(Integer, doc=(
        "Optimizer steps done when it was taken."))
    data: Mapped[bytes] = mapped_column(LargeBinary, doc=(
        "The checkpoint file, megabytes: what torch.save wrote of a dict that describes itself "
        "(`format`, `model`, `model_config`, `hyperparameters`, `epoch`, `step`, the model's, "
        "optimizer's and scheduler's states, ...). Read it with "
        "`torch.load(io.BytesIO(data), weights_only=True)`."))
    sha256: Mapped[str] = mapped_column(String(64), doc=(
        "SHA-256 of `data`, lowercase hex."))
    size: Mapped[int] = mapped_column(BigInteger, doc=(
        "Length of `data` in bytes."))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, doc=(
        "The metrics at that point, a JSON object: the last epoch's validation metrics and "
        "the last `train_loss` (null for a number that was not finite)."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When it was stored."))


class Dataset(Base):
    """A user-uploaded dataset (built-in ones are files, not rows)."""

    __tablename__ = "datasets"
    __table_args__ = (
        # Names are per owner: a taken name must not tell one user what another uploaded.
        UniqueConstraint("owner", "name", info={"serves": (
            "One upload of a name per owner (a taken name is refused), and finding an upload "
            "by owner and name (a job's dataset check; the worker loading its bytes).")}),
        CheckConstraint(f"kind IN ({_in(DATASET_KINDS)})", name="kind"),
        {"info": {"pk_serves": "Row identity only: uploads are found by (owner, name)."}},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, doc=(
        "Row id."))
    name: Mapped[str] = mapped_column(String(200), doc=(
        "The name jobs give as their `dataset`: 1 to 64 of a-z, 0-9, `_` and `-`."))
    kind: Mapped[str] = mapped_column(String(16), doc=(
        "`text` (a corpus for the language model; the only kind uploads take now) or "
        "`images`."))
    data: Mapped[bytes] = mapped_column(LargeBinary, doc=(
        "The uploaded file: UTF-8 text for `text`."))
    size: Mapped[int] = mapped_column(BigInteger, doc=(
        "Length of `data` in bytes."))
    sha256: Mapped[str] = mapped_column(String(64), doc=(
        "SHA-256 of `data`, lowercase hex."))
    description: Mapped[str] = mapped_column(Text, default="", doc=(
        "The uploader's description; empty when none was given."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When it was uploaded."))
    owner: Mapped[str] = mapped_column(
        String(100), default=LOCAL_OWNER, server_default=LOCAL_OWNER, doc=(
            "The user who uploaded it; only their jobs can train on it. `local` when no key "
            "was used."))


class ApiKey(Base):
    """An API key: only its SHA-256 is stored; the key itself is shown once, at creation.

    `owner` is the user the key acts for (several keys may share one); an admin key sees and
    may cancel everyone's jobs. A revoked key stays for the record but opens nothing.
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("key_hash", info={"serves": (
            "Every authenticated request: the key presented is hashed and looked up here.")}),
        {"info": {"pk_serves": (
            "A key by id: revoking it, and its dashboard sessions (`web_sessions.key_id`).")}},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, doc=(
        "The key's number, as the CLI lists and revokes keys."))
    owner: Mapped[str] = mapped_column(String(100), doc=(
        "The user the key acts for: what it creates gets this `owner`."))
    prefix: Mapped[str] = mapped_column(String(16), doc=(
        "The key's first few characters, to tell keys apart (the key itself is not stored)."))
    key_hash: Mapped[str] = mapped_column(String(64), doc=(
        "SHA-256 of the key, lowercase hex; the key itself is not stored."))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, doc=(
        "True: it sees, and may cancel, every user's jobs."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When it was created."))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When it last opened a request, to within a minute (written at most once a minute); "
        "NULL: never used."))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When it was revoked; NULL while it is active."))


class WebSession(Base):
    """A dashboard sign-in: the cookie carries a random token whose SHA-256 is the key here.

    `csrf_token` must come back in the X-CSRF-Token header of every state-changing request
    made with the cookie. Revoking the API key ends its sessions.
    """

    __tablename__ = "web_sessions"
    __table_args__ = (
        Index("ix_web_sessions_key_id", "key_id", info={"serves": (
            "Ending a key's sessions when it is revoked (DELETE ... WHERE key_id = ?), and the "
            "ON DELETE CASCADE from `api_keys`.")}),
        {"info": {"pk_serves": (
            "Every dashboard request with a session cookie: the cookie's token is hashed and "
            "looked up here; signing out deletes by it.")}},
    )

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True, doc=(
        "SHA-256 of the cookie's token, lowercase hex; the token itself is not stored."))
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), doc=(
        "The API key that signed in: the session acts as it."))
    csrf_token: Mapped[str] = mapped_column(String(64), doc=(
        "The token the dashboard must send in X-CSRF-Token with every state-changing request."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When the user signed in."))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, doc=(
        "When the sign-in lapses (TRAINYARD_SESSION_HOURS after it, 12 by default); expired "
        "rows are deleted whenever a new session is made."))


class JobText(Base):
    """A text artifact of a job, e.g. the language model's sampled text after an epoch."""

    __tablename__ = "job_texts"
    __table_args__ = (
        Index("ix_job_texts_job_id_step", "job_id", "step", info={"serves": (
            "A job's texts in step order (GET /jobs/{id}/texts).")}),
        {"info": {"pk_serves": (
            "Row identity; also the order of texts written at the same step.")}},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, doc=(
        "Row id; grows in the order texts were written."))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), doc=(
        "The job that wrote it."))
    epoch: Mapped[int] = mapped_column(Integer, doc=(
        "Epochs completed when it was written."))
    step: Mapped[int] = mapped_column(Integer, doc=(
        "Optimizer steps done when it was written."))
    name: Mapped[str] = mapped_column(String(200), doc=(
        "What it is: `sample` (text the language model generated, prompted with the start of "
        "the validation text)."))
    text: Mapped[str] = mapped_column(Text, doc=(
        "The text (a NUL character is stored as U+FFFD)."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When it was stored."))


class Worker(Base):
    """A worker process that is, or was, serving queues: its presence beat.

    Each worker upserts its row every `heartbeat_seconds` while its consumer runs and marks it
    stopped when it shuts down; a row not seen for a lease is a dead worker. `/healthz` reads
    these rows to tell whether each queue with jobs has someone serving it.
    """

    __tablename__ = "workers"
    __table_args__ = (
        Index("ix_workers_seen_at", "seen_at", info={"serves": (
            "The workers seen since a cutoff, for /healthz's count of live workers per queue, "
            "and forgetting the ones not seen for long.")}),
        {"info": {"pk_serves": (
            "The presence beat: one upsert per worker (ON CONFLICT (name)), and marking it "
            "stopped.")}},
    )

    name: Mapped[str] = mapped_column(String(255), primary_key=True, doc=(
        "Its Celery node name, e.g. `celery@gpu-box`: what `jobs.worker` names."))
    hostname: Mapped[str] = mapped_column(String(255), doc=(
        "The machine it runs on."))
    pid: Mapped[int] = mapped_column(Integer, doc=(
        "Its process id on that machine (of the latest process under this name)."))
    queues: Mapped[str] = mapped_column(String(200), doc=(
        "The queues it serves, comma-separated, e.g. `cpu,auto`."))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When a worker of this name was first seen (a restart under the same name keeps it)."))
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "Its latest presence beat (every TRAINYARD_HEARTBEAT_SECONDS, 5 by default); one older "
        "than the lease (TRAINYARD_LEASE_SECONDS, 30) is a dead worker."))
    stopped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When it shut down cleanly; NULL while it runs (or when it died without saying so)."))
    # What it is and does (migration 0008), for GET /workers and the scheduler.
    device_class: Mapped[str] = mapped_column(String(8), default="cpu", server_default="cpu", doc=(
        "`cuda` when it serves the cuda queue, else `cpu`."))
    gpu_name: Mapped[str | None] = mapped_column(String(200), doc=(
        "Its GPU's name (the first visible one); NULL without CUDA."))
    gpu_memory_bytes: Mapped[int | None] = mapped_column(BigInteger, doc="That GPU's total memory.")
    torch_version: Mapped[str | None] = mapped_column(String(50), doc="The torch it trains with.")
    state: Mapped[str] = mapped_column(String(16), default="idle", server_default="idle", doc=(
        "`idle`, `busy` (running `job_id`), or `draining` (asked to give its job back and take "
        "no new one). `lost` is not stored: a row not seen for a lease is shown so."))
    job_id: Mapped[int | None] = mapped_column(Integer, doc="The job it runs; NULL when idle.")
    jobs_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0", doc=(
        "Attempts it has ended (whatever their outcome) since it was first seen."))
    infra_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0", doc=(
        "Its jobs that the reconciler took back because it stopped heart-beating."))
    drain_requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When an admin asked it to drain (POST /workers/{name}/drain); cleared when a process "
        "of this name starts."))
