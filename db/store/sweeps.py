"""Sweeps and their trials: the rows, the launch of a trial, and what a decision reads.

A sweep's truth is its row plus its trial jobs (`jobs.sweep_id`, `jobs.trial`). Whatever
proposes or prunes (sweeps/, with Optuna) reads them here and writes back only through
`launch_trial` and the job transitions, so any process may drive any sweep at any time:
`launch_trial` rechecks the sweep's limits under a lock on the sweep's row, and the unique
(sweep_id, trial) constraint makes a trial number launch once however many processes race.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.states import ACTIVE, JobStatus
from db.store.base import json_safe
from db.store.records import JobRecord, Record, record_of
from db.tables import LOCAL_OWNER, Job, JobAttempt, Metric, Sweep, utcnow


@dataclass(frozen=True)
class SweepRecord(Record):
    id: int
    name: str
    owner: str
    model: str
    dataset: str
    hyperparameters: dict[str, Any]
    space: dict[str, Any]
    method: str
    objective_metric: str
    objective_goal: str
    max_trials: int
    max_concurrent: int
    early_stopping: dict[str, Any]
    seed: int
    device: str
    priority: int
    status: str
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class TrialRecord(Record):
    """One trial as a decision needs it: its job's state and hyperparameters, and its
    objective per epoch (`objective[epoch]`, NULL values left out)."""

    job_id: int
    number: int
    name: str
    status: str
    hyperparameters: dict[str, Any]
    epoch: int
    total_epochs: int | None
    step: int
    error: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    objective: dict[int, float]
    started_at: dt.datetime | None = None


class SweepsMixin:
    """Sweep rows and the launch of their trials (see the module docstring)."""

    def create_sweep(self, *, owner: str = LOCAL_OWNER, name: str | None, **fields: Any
                     ) -> SweepRecord:
        """Insert a running sweep (no trials yet: the caller launches them); unnamed sweeps
        are called `<model>-<method>-sweep-<id>`."""
        now = utcnow()
        with self._session() as s:
            sweep = Sweep(name=name or "", owner=owner, status="running", created_at=now,
                          updated_at=now, **json_safe(fields))
            s.add(sweep)
            s.flush()
            if not name:
                sweep.name = f"{sweep.model}-{sweep.method}-sweep-{sweep.id}"
            return record_of(SweepRecord, sweep)

    def get_sweep(self, sweep_id: int) -> SweepRecord | None:
        with self._session() as s:
            sweep = s.get(Sweep, sweep_id)
            return record_of(SweepRecord, sweep) if sweep is not None else None

    def list_sweeps(self, owner: str | None = None, limit: int = 100, offset: int = 0,
                    status: str | None = None) -> tuple[list[SweepRecord], int]:
        """Sweeps newest first (`owner` None: everyone's), and how many match in all."""
        where = []
        if owner is not None:
            where.append(Sweep.owner == owner)
        if status is not None:
            where.append(Sweep.status == status)
        with self._session() as s:
            total = s.scalar(select(func.count()).select_from(Sweep).where(*where)) or 0
            rows = s.scalars(select(Sweep).where(*where).order_by(Sweep.id.desc())
                             .limit(limit).offset(offset)).all()
            return [record_of(SweepRecord, r) for r in rows], total

    def running_sweep_ids(self) -> list[int]:
        with self._session() as s:
            return list(s.scalars(select(Sweep.id).where(Sweep.status == "running")
                                  .order_by(Sweep.id)))

    def trial_counts(self, sweep_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """Per sweep, its trials counted by job status."""
        if not sweep_ids:
            return {}
        with self._session() as s:
            rows = s.execute(select(Job.sweep_id, Job.status, func.count())
                             .where(Job.sweep_id.in_(list(sweep_ids)))
                             .group_by(Job.sweep_id, Job.status)).all()
        counts: dict[int, dict[str, int]] = {i: {} for i in sweep_ids}
        for sweep_id, status, n in rows:
            counts[sweep_id][status] = n
        return counts

    def sweep_trials(self, sweep_id: int, objective_metric: str) -> list[TrialRecord]:
        """Every trial of the sweep in trial order, with its objective per epoch: two index
        range reads (jobs by (sweep_id, trial); metrics by (job_id, name, ...))."""
        with self._session() as s:
            jobs = s.execute(select(
                Job.id, Job.trial, Job.name, Job.status, Job.hyperparameters, Job.epoch,
                Job.total_epochs, Job.step, Job.error, Job.created_at, Job.finished_at,
                Job.started_at,
            ).where(Job.sweep_id == sweep_id).order_by(Job.trial)).all()
            objective: dict[int, dict[int, float]] = {j.id: {} for j in jobs}
            ids = list(objective)
            for start in range(0, len(ids), 500):  # bounded IN lists
                rows = s.execute(select(Metric.job_id, Metric.epoch, Metric.value).where(
                    Metric.job_id.in_(ids[start:start + 500]), Metric.name == objective_metric,
                    Metric.value.is_not(None))).all()
                for job_id, epoch, value in rows:
                    objective[job_id][epoch] = value
        return [TrialRecord(job_id=j.id, number=j.trial, name=j.name, status=j.status,
                            hyperparameters=j.hyperparameters, epoch=j.epoch,
                            total_epochs=j.total_epochs, step=j.step, error=j.error,
                            created_at=j.created_at, finished_at=j.finished_at,
                            objective=objective[j.id], started_at=j.started_at) for j in jobs]

    def best_trials(self, sweeps: Sequence[SweepRecord]) -> dict[int, TrialRecord]:
        """Each sweep's succeeded trial with the best objective (its metric at the trial's
        last epoch), for lists of sweeps: one index seek per succeeded trial, no curves."""
        by_metric: dict[str, list[SweepRecord]] = {}
        for sweep in sweeps:
            by_metric.setdefault(sweep.objective_metric, []).append(sweep)
        best: dict[int, TrialRecord] = {}
        with self._session() as s:
            for metric, group in by_metric.items():
                goals = {sw.id: sw.objective_goal for sw in group}
                rows = s.execute(select(
                    Job.sweep_id, Job.id, Job.trial, Job.name, Job.status, Job.hyperparameters,
                    Job.epoch, Job.total_epochs, Job.step, Job.error, Job.created_at,
                    Job.finished_at, Job.started_at, Metric.value,
                ).join(Metric, (Metric.job_id == Job.id) & (Metric.name == metric)
                       & (Metric.epoch == Job.epoch)).where(
                    Job.sweep_id.in_(list(goals)), Job.status == JobStatus.SUCCEEDED,
                    Metric.value.is_not(None))).all()
                for r in rows:
                    sign = 1 if goals[r.sweep_id] == "max" else -1
                    held = best.get(r.sweep_id)
                    if held is not None and (sign * held.objective[held.epoch], -held.number) >= (
                            sign * r.value, -r.trial):
                        continue
                    best[r.sweep_id] = TrialRecord(
                        job_id=r.id, number=r.trial, name=r.name, status=r.status,
                        hyperparameters=r.hyperparameters, epoch=r.epoch,
                        total_epochs=r.total_epochs, step=r.step, error=r.error,
                        created_at=r.created_at, finished_at=r.finished_at,
                        objective={r.epoch: r.value}, started_at=r.started_at)
        return best

    def _lock_sweep(self, s: Session, sweep_id: int) -> Sweep | None:
        """The sweep's row, locked until the transaction ends (Postgres: FOR UPDATE; SQLite:
        the database's write lock, taken before anything is read)."""
        if self.dialect == "sqlite":
            s.connection().exec_driver_sql("BEGIN IMMEDIATE")
            return s.get(Sweep, sweep_id)
        return s.scalar(select(Sweep).where(Sweep.id == sweep_id).with_for_update())

    def launch_trial(self, sweep_id: int, number: int, hyperparameters: Mapping[str, Any],
                     error: str | None = None, max_queued: int | None = None,
                     memory_bytes: int | None = None) -> JobRecord | None:
        """Insert trial `number` of a running sweep as a queued job of its owner (or, with
        `error`, as a failed one: its proposal could not run). None, inserting nothing, unless
        the sweep is running, `number` is the next trial number, fewer than `max_trials`
        trials exist, fewer than `max_concurrent` are queued or running and (with
        `max_queued`) its owner has fewer queued jobs than that, the per-user cap of POST
        /jobs: checked under a lock on the sweep's row (and, on Postgres, the owner's queue
        lock), so racing launchers never exceed any of these limits. A sweep held back by
        the cap launches once its owner's queue drains (the reconciler advances it)."""
        with self._session() as s:
            sweep = self._lock_sweep(s, sweep_id)
            if sweep is None or sweep.status != "running":
                return None
            launched, active = s.execute(select(
                func.count(), func.count().filter(Job.status.in_(ACTIVE)),
            ).where(Job.sweep_id == sweep_id)).one()
            if number != launched or launched >= sweep.max_trials:
                return None
            if error is None and active >= sweep.max_concurrent:
                return None
            if error is None and max_queued is not None:
                if self.dialect == "postgresql":  # SQLite holds its one write lock already
                    self._lock_owner_queue(s, sweep.owner)
                if self._count_jobs(s, sweep.owner, ["queued"]) >= max_queued:
                    return None
            now = utcnow()
            job = Job(
                name=f"{sweep.name}-t{number}", model=sweep.model, dataset=sweep.dataset,
                hyperparameters=json_safe(dict(hyperparameters)), device=sweep.device,
                status="failed" if error else "queued", error=error,
                finished_at=now if error else None, attempts=0, epoch=0, step=0,
                created_at=now, updated_at=now, enqueued_at=now, infra_failures=0,
                owner=sweep.owner, priority=sweep.priority, sweep_id=sweep_id, trial=number,
                memory_bytes=memory_bytes,
            )
            s.add(job)
            sweep.updated_at = now
            try:
                s.flush()
            except IntegrityError:  # another launcher took this number first
                s.rollback()
                return None
            if error:  # a trial that could not run is job.failed
                self._queue_job_event(s, job)
            return record_of(JobRecord, job)

    def finish_sweep(self, sweep_id: int, status: str, error: str | None = None) -> bool:
        """running -> succeeded | failed, once; False if it was not running."""
        now = utcnow()
        with self._session() as s:
            done = s.execute(update(Sweep).where(Sweep.id == sweep_id,
                                                 Sweep.status == "running")
                             .values(status=status, error=error, finished_at=now,
                                     updated_at=now))
            if done.rowcount == 1:  # sweep.finished, same transaction
                self._queue_sweep_event(s, sweep_id)
            return done.rowcount == 1

    def cancel_sweep(self, sweep_id: int) -> tuple[SweepRecord | None, list[int]]:
        """Cancel a running sweep and its queued and running trials in one transaction:
        (the sweep, the ids of the trials cancelled); (None, []) if it was not running.
        A running trial's worker sees the cancel at its next status check."""
        now = utcnow()
        with self._session() as s:
            sweep = self._lock_sweep(s, sweep_id)
            if sweep is None or sweep.status != "running":
                return None, []
            sweep.status, sweep.finished_at, sweep.updated_at = "cancelled", now, now
            cancelled = list(s.scalars(
                update(Job).where(Job.sweep_id == sweep_id, Job.status.in_(ACTIVE))
                .values(status="cancelled", finished_at=now, updated_at=now)
                .returning(Job.id)))
            if cancelled:
                s.execute(update(JobAttempt).where(
                    JobAttempt.job_id.in_(cancelled), JobAttempt.ended_at.is_(None))
                    .values(ended_at=now, outcome="cancelled"))
                for job_id in cancelled:
                    self._release_worker(s, job_id, lost=False)
            s.flush()
            # job.cancelled per trial and sweep.finished, same transaction
            self._queue_jobs_event(s, sweep.owner, cancelled)
            self._queue_sweep_event(s, sweep_id)
            return record_of(SweepRecord, sweep), cancelled

