"""Sweeps: a search over hyperparameters whose trials are ordinary jobs (`jobs.sweep_id`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from db.tables.base import (
    LOCAL_OWNER,
    PRIORITY_MAX,
    PRIORITY_MIN,
    Base,
    JSONType,
    UTCDateTime,
    _in,
    utcnow,
)

SWEEP_STATUSES = ("running", "succeeded", "failed", "cancelled")
SWEEP_METHODS = ("grid", "random", "tpe")
SWEEP_GOALS = ("min", "max")


class Sweep(Base):
    """One search: what is searched, how, and to what end. Its trials are the jobs with its
    `sweep_id`, numbered by `jobs.trial`; what Optuna knows of them is rebuilt from those rows
    at each decision (sweeps/), so this row and the jobs are the whole truth."""

    __tablename__ = "sweeps"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(SWEEP_STATUSES)})", name="status"),
        CheckConstraint(f"method IN ({_in(SWEEP_METHODS)})", name="method"),
        CheckConstraint(f"objective_goal IN ({_in(SWEEP_GOALS)})", name="objective_goal"),
        CheckConstraint("max_trials >= 1 AND max_concurrent >= 1", name="trial_counts"),
        CheckConstraint(f"priority BETWEEN {PRIORITY_MIN} AND {PRIORITY_MAX}", name="priority"),
        Index("ix_sweeps_owner_id", "owner", "id", info={"serves": (
            "A user's sweeps, newest first (GET /sweeps: WHERE owner = ? ORDER BY id DESC).")}),
        Index("ix_sweeps_status_id", "status", "id", info={"serves": (
            "The running sweeps, which the reconciler advances (WHERE status = 'running') "
            "(0009).")}),
        {"info": {"pk_serves": (
            "One sweep by id (GET /sweeps/{id}; the row each advance locks), and the "
            "unfiltered list, newest first.")}},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, doc=(
        "The sweep's number, as in /sweeps/{id}."))
    name: Mapped[str] = mapped_column(String(200), doc=(
        "A label: the submitter's, else `<model>-<method>-sweep-<id>`; trials are named "
        "`<name>-t<trial>`."))
    owner: Mapped[str] = mapped_column(String(100), default=LOCAL_OWNER, doc=(
        "The user who created it; its trials are theirs."))
    model: Mapped[str] = mapped_column(String(50), doc="The model family every trial trains.")
    dataset: Mapped[str] = mapped_column(String(200), doc="The dataset every trial trains on.")
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONType, doc=(
        "The fixed hyperparameters every trial shares (checked as a job's), without the "
        "searched ones."))
    space: Mapped[dict[str, Any]] = mapped_column(JSONType, doc=(
        "What is searched: per hyperparameter `{\"values\": [...]}` or `{\"low\", \"high\", "
        "\"log\", \"step\"}`, as given and checked against the model's catalogue."))
    method: Mapped[str] = mapped_column(String(16), doc=(
        "How trials are proposed: `grid` (every combination, in order), `random` or `tpe` "
        "(Optuna's samplers)."))
    objective_metric: Mapped[str] = mapped_column(String(200), doc=(
        "The per-epoch metric the sweep optimises (e.g. `val_accuracy`); a trial's objective "
        "is its value at the trial's last epoch."))
    objective_goal: Mapped[str] = mapped_column(String(8), doc="`max` or `min`.")
    max_trials: Mapped[int] = mapped_column(Integer, doc=(
        "Trials the sweep runs in all (a grid: its size, or fewer if asked); never more."))
    max_concurrent: Mapped[int] = mapped_column(Integer, doc=(
        "Trials queued or running at once, at most."))
    early_stopping: Mapped[dict[str, Any]] = mapped_column(JSONType, doc=(
        "`{\"method\": \"none\" | \"median\" | \"asha\", \"min_epochs\", "
        "\"reduction_factor\"}`: the pruner asked at each trial's epoch end."))
    seed: Mapped[int] = mapped_column(Integer, default=0, doc=(
        "Seeds the sampler: the same spec and seed propose the same trials."))
    device: Mapped[str] = mapped_column(String(16), doc="The queue its trials ask for.")
    priority: Mapped[int] = mapped_column(Integer, default=0, doc="Its trials' priority.")
    status: Mapped[str] = mapped_column(String(16), default="running", doc=(
        "`running` until every trial is finished (or launching stopped): then `succeeded` "
        "(a trial has an objective), `failed` (none has) or `cancelled`."))
    error: Mapped[str | None] = mapped_column(Text, doc=(
        "Why it failed or stopped launching, in words; NULL otherwise."))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When it was created."))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, doc=(
        "When it last launched a trial or changed status."))
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, doc=(
        "When it ended; NULL while running."))
