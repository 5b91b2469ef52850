"""What a run leaves: metric points, their rollups, checkpoints and texts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.tables.base import (
    Base,
    BigIntPK,
    JSONType,
    UTCDateTime,
    utcnow,
)


class Metric(Base):
    """One point of one metric series; unique per (job, name, step).

    `value` is NULL for a non-finite number (NaN or infinity), which neither SQLite nor JSON
    can carry; `time` is seconds since the Unix epoch when the point was recorded.
    """

    __tablename__ = "metrics"
    __table_args__ = (
        UniqueConstraint("job_id", "name", "step", postgresql_include=["epoch", "value"],
                         info={"serves": (
            "One point per (job, name, step): what the metric upsert conflicts on, so a resumed "
            "run that repeats steps replaces its points instead of adding duplicates. On "
            "PostgreSQL it also carries epoch and value (INCLUDE), so it serves every read of "
            "points as the covering index below does on SQLite, and a point written updates "
            "one index instead of two (0017).")}),
        Index(
            "ix_metrics_job_id_name_step_epoch_value", "job_id", "name", "step", "epoch", "value",
            info={"serves": (
                "SQLite only (no INCLUDE there; PostgreSQL reads the unique constraint's "
                "index). Every read of points: a job's curves in step order (GET "
                "/jobs/{id}/metrics), many runs' short curves and the last points of long ones "
                "(GET /compare/series), the value at a series' last step (GET /compare), the "
                "best metric in GET /jobs, and metric names (a loose index scan). It holds "
                "every column these read, so they are range scans of the index alone, with no "
                "lookup of the table row per point (0002).")},
        ).ddl_if(dialect="sqlite"),
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


class SeriesSummary(Base):
    """One finished run's curve of one metric as GET /compare/series answers it for one
    `max_points`: computed once, when the run finished more than a lease ago (its points no
    longer change), and read instead of its points or rollups (Store.series_summaries).

    Written by the read path for what it had to compute (GET /compare/series) and by the
    reconciler's pass for the levels the compare page asks of many runs (50 and 100 points,
    every metric of the run; `jobs.summarised_at`). Derived data: deleting every row only
    makes the next reads compute them again.
    """

    __tablename__ = "series_summaries"
    # Clustered by its key on SQLite, so a run's summaries are one range of the table.
    __table_args__ = {"sqlite_with_rowid": False, "info": {"pk_serves": (
        "Reading the summaries of many (job, name) at one `max_points` (GET /compare/series: "
        "WHERE job_id IN (...) AND name IN (...) AND max_points = ?), and what their "
        "INSERT ... ON CONFLICT DO NOTHING conflicts on, so racing writers store one row.")}}

    job_id: Mapped[int] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True, doc=(
            "The run (deleting the job deletes its summaries)."))
    name: Mapped[str] = mapped_column(String(200), primary_key=True, doc=(
        "The metric, as in `metrics.name`."))
    max_points: Mapped[int] = mapped_column(Integer, primary_key=True, doc=(
        "The `max_points` it was downsampled to (the compare page asks 50, 100, 200, 500 "
        "or 1000)."))
    data: Mapped[str | None] = mapped_column(Text, doc=(
        "The series exactly as GET /compare/series answers it, as compact JSON text: "
        "`{\"step\": [...], \"epoch\": [...], \"value\": [...], \"final\", \"best\", "
        "\"epochs\": {\"epoch\": [...], \"mean\": [...]}}`. NULL: the run has no point of this "
        "metric. Text rather than JSON/JSONB: read back with one parse, keys in their order."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When it was stored."))


# The bytes of a checkpoint kept in its own row; the rest go to checkpoint_chunks in pieces of
# this size. One value can hold at most 1 GB on either database (PostgreSQL's field limit,
# SQLite's default SQLITE_MAX_LENGTH), and a 100M-parameter model (TRAINYARD_MAX_MODEL_PARAMETERS)
# checkpointed with Adam's two moments is 1.2 GB; most checkpoints fit the first piece.
CHECKPOINT_CHUNK_BYTES = 16 * 2**20


class Checkpoint(Base):
    """A training checkpoint; the bytes live in the database (bytea on Postgres): the first
    CHECKPOINT_CHUNK_BYTES (16 MiB) in this row, any more in `checkpoint_chunks`.

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
        "The checkpoint file's first 16 MiB (the whole file, for most): what torch.save wrote "
        "of a dict that describes itself (`format`, `model`, `model_config`, "
        "`hyperparameters`, `epoch`, `step`, the model's, optimizer's and scheduler's states, "
        "...). A longer file continues in `checkpoint_chunks`, in `seq` order; `size` is the "
        "whole file's. Read the file with "
        "`torch.load(io.BytesIO(file), weights_only=True)`."))
    sha256: Mapped[str] = mapped_column(String(64), doc=(
        "SHA-256 of the whole file (`data` and its chunks), lowercase hex."))
    size: Mapped[int] = mapped_column(BigInteger, doc=(
        "Length of the whole file in bytes (`data` and its chunks)."))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, doc=(
        "The metrics at that point, a JSON object: the last epoch's validation metrics and "
        "the last `train_loss` (null for a number that was not finite)."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When it was stored."))




class CheckpointChunk(Base):
    """The bytes of a checkpoint past its first 16 MiB, in pieces of 16 MiB (migration 0019):
    no database value can hold more than 1 GB, and a big model's checkpoint is more."""

    __tablename__ = "checkpoint_chunks"
    __table_args__ = (
        {"info": {"pk_serves": (
            "Reading a checkpoint's bytes in order (seq = 1, 2, ...), and the ON DELETE "
            "CASCADE from `checkpoints`.")}},
    )

    checkpoint_id: Mapped[int] = mapped_column(
        ForeignKey("checkpoints.id", ondelete="CASCADE"), primary_key=True, doc=(
            "The checkpoint these bytes belong to."))
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, doc=(
        "The piece's place in the file after the row's own `data`: 1 first."))
    data: Mapped[bytes] = mapped_column(LargeBinary, doc=(
        "The piece's bytes (16 MiB, the last one less)."))


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
