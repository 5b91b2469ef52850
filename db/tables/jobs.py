"""Jobs and their attempts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column

from core.states import Outcome
from db.tables.base import (
    JOB_STATUSES,
    LOCAL_OWNER,
    PRIORITY_MAX,
    PRIORITY_MIN,
    Base,
    JSONType,
    UTCDateTime,
    _in,
    utcnow,
)


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
        Index("ix_jobs_parent_job_id", "parent_job_id", info={"serves": (
            "The checkpoints that forks start from, which a parent's checkpoint pruning keeps "
            "(WHERE parent_job_id = ?) (0009).")}),
        Index("ix_jobs_finished_at_unsummarised", "finished_at",
              sqlite_where=text("summarised_at IS NULL"),
              postgresql_where=text("summarised_at IS NULL"), info={"serves": (
                  "The reconciler's scan for runs that finished over a lease ago and have no "
                  "series summaries yet (WHERE summarised_at IS NULL AND finished_at < ?). "
                  "Partial: it holds only the jobs not yet summarised (the live ones and "
                  "those that just finished), so the scan is a few seeks however many jobs "
                  "are done (0010).")}),
        UniqueConstraint("sweep_id", "trial", info={"serves": (
            "A sweep's trials in order (WHERE sweep_id = ? ORDER BY trial), and the guarantee "
            "that no trial number is launched twice however many processes advance the "
            "sweep at once (0009).")}),
        {"info": {"pk_serves": (
            "One job by id (GET /jobs/{id}; every status change is UPDATE ... WHERE id = ?), "
            "and the unfiltered job list, newest first (ORDER BY id DESC, keyset pages "
            "id < ?).")},
         # SQLite never gives a deleted job's id again (0016).
         "sqlite_autoincrement": True},
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
        "Where it is: `queued`, `running`, `succeeded`, `failed`, `cancelled` or `pruned` "
        "(a sweep's early stopping ended it)."))
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
    # Sweeps and forks (migration 0009).
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweeps.id"), doc=(
        "The sweep it is a trial of (`sweeps.id`); NULL for a job submitted alone."))
    trial: Mapped[int | None] = mapped_column(Integer, doc=(
        "Its trial number in the sweep, from 0, in the order the sweep launched them."))
    parent_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), doc=(
            "A forked run: the job whose checkpoint it starts from; NULL otherwise."))
    parent_checkpoint_id: Mapped[int | None] = mapped_column(Integer, doc=(
        "A forked run: the checkpoint (`checkpoints.id` of the parent) whose weights it starts "
        "from. Kept by the parent's checkpoint pruning while a fork refers to it."))
    parent_epoch: Mapped[int | None] = mapped_column(Integer, doc=(
        "A forked run: the parent's epochs completed at that checkpoint."))
    parent_step: Mapped[int | None] = mapped_column(Integer, doc=(
        "A forked run: the parent's step at that checkpoint; the fork's steps continue from "
        "it, so its curves continue the parent's on the compare page."))
    resume_optimizer: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=sa_false(), doc=(
            "A forked run: true to take the parent's optimizer state too (else a fresh "
            "optimizer and schedule)."))
    # Series summaries (migration 0010).
    summarised_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When the reconciler stored the series summaries of this finished run (the levels of "
        "points the compare page asks for many runs: `series_summaries`); NULL before, and "
        "for jobs not finished yet."))
    # GPUs and GPU memory (migration 0011).
    gpus: Mapped[int] = mapped_column(Integer, default=1, server_default="1", doc=(
        "How many GPUs (on a CPU worker: processes) it trains on at once, with "
        "DistributedDataParallel; only a worker that has that many claims it."))
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger, doc=(
        "Its estimated training memory per GPU (models.training_memory_bytes: state, peak "
        "and the dataset), recorded at submit and made exact by the worker once it has "
        "loaded the data: a worker on a shared GPU claims it only when that much is free. "
        "NULL for jobs queued before migration 0011."))
    memory_wait_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When a claim first passed it over, first in line, for want of GPU memory on a GPU "
        "where it fits (smaller jobs behind it start first meanwhile); once it has waited "
        "TRAINYARD_GPU_BACKFILL_SECONDS, those GPUs take no job behind it. Cleared when it is "
        "claimed (migration 0018)."))
    dataset_version: Mapped[int | None] = mapped_column(Integer, doc=(
        "The version of the owner's upload it trains on (`datasets.version`), fixed at "
        "submit: a later upload of the name does not change what it trains on. NULL for "
        "built-in datasets and jobs queued before migration 0013."))
    dataset_sha256: Mapped[str | None] = mapped_column(String(64), doc=(
        "SHA-256 of that version's stored file, kept even after the version is deleted: "
        "what exactly the run saw. NULL when `dataset_version` is."))


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
