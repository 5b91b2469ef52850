"""Drives sweeps forward: launches their next trials, judges a trial at its epoch end, and ends
a sweep when its trials are done. Any process may call any of these at any time (the API on
creation, a worker when a trial ends or reports an epoch, the reconciler every pass): each
decision reads the database afresh, and `Store.launch_trial` rechecks the limits under a lock,
so a sweep survives the loss of any process and never launches a trial twice.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from core.states import ACTIVE, JobStatus
from db.store import JobRecord, Store, SweepRecord, TrialRecord
from models import check_job, training_memory_bytes
from models.registry import SpecError, dataset_kind_for
from sweeps.search import propose, should_prune
from sweeps.space import dimensions_from_json

log = logging.getLogger(__name__)

# A sweep stops launching when this many trials have ended and every one failed (or all of
# them, if the sweep is smaller): a spec that cannot train should not burn its whole budget.
FAILURES_BEFORE_GIVING_UP = 3


def _has_objective(trial: TrialRecord) -> bool:
    return trial.status in (JobStatus.SUCCEEDED, JobStatus.PRUNED) and bool(trial.objective)


def trial_objective(trial: TrialRecord) -> float | None:
    """A finished trial's objective: its value at the trial's last epoch (None while it runs,
    or when it has none)."""
    if trial.status != JobStatus.SUCCEEDED or not trial.objective:
        return None
    return trial.objective.get(trial.epoch, trial.objective[max(trial.objective)])


def _giving_up(sweep: SweepRecord, trials: list[TrialRecord]) -> str | None:
    ended = [t for t in trials if t.status not in ACTIVE]
    if any(_has_objective(t) for t in trials):
        return None
    needed = min(sweep.max_trials, max(FAILURES_BEFORE_GIVING_UP, sweep.max_concurrent))
    failed = [t for t in ended if t.status == JobStatus.FAILED]
    if len(failed) >= needed:
        last = failed[-1].error or "no error recorded"
        return (f"the first {len(failed)} trials all failed, so no more are launched; "
                f"the last: {last[:500]}")
    return None


def _end_if_done(store: Store, sweep: SweepRecord, trials: list[TrialRecord]) -> bool:
    """End the sweep when nothing runs and nothing more will launch. True if it has ended."""
    if any(t.status in ACTIVE for t in trials):
        return False
    giving_up = _giving_up(sweep, trials)
    if len(trials) < sweep.max_trials and giving_up is None:
        return False
    if any(_has_objective(t) for t in trials):
        status, error = "succeeded", None
    else:
        status = "failed"
        error = giving_up or f"none of the {len(trials)} trials reported {sweep.objective_metric}"
    if store.finish_sweep(sweep.id, status, error):
        log.info("sweep %s %s after %s trials", sweep.id, status, len(trials))
    return True


def trial_hyperparameters(sweep: SweepRecord, proposed: dict[str, Any], settings: Any,
                          image_shape: tuple[int, int, int, int] | None = None
                          ) -> tuple[dict[str, Any], str | None]:
    """The proposal as a job's hyperparameters, checked as POST /jobs checks a job; with the
    reason when it cannot run (the trial is then recorded as failed)."""
    hp = {**sweep.hyperparameters, **proposed}
    try:
        return check_job(
            sweep.model, hp, sweep.dataset, lambda _name: dataset_kind_for(sweep.model),
            data_dir=settings.resolved_data_dir, max_parameters=settings.max_model_parameters,
            max_activation_bytes=settings.max_activation_bytes, image_shape=image_shape), None
    except SpecError as exc:
        return hp, f"the proposed hyperparameters cannot run: {exc.field}: {exc.message}"


def advance(store: Store, sweep_id: int, settings: Any) -> list[JobRecord]:
    """Launch what the sweep may launch now (up to `max_concurrent` active, `max_trials` in
    all), or end it; returns the queued trial jobs launched (the caller wakes workers)."""
    sweep = store.get_sweep(sweep_id)
    if sweep is None or sweep.status != "running":
        return []
    # Counting first: a sweep with its slots full has nothing to decide (most passes).
    counts = store.trial_counts([sweep_id])[sweep_id]
    active = sum(counts.get(s, 0) for s in ACTIVE)
    if active >= sweep.max_concurrent or (active and sum(counts.values()) >= sweep.max_trials):
        return []
    space = dimensions_from_json(sweep.space, sweep.model)
    trials = store.sweep_trials(sweep_id, sweep.objective_metric)
    launched: list[JobRecord] = []
    _, _, upload = store.find_upload(sweep.dataset, sweep.owner)
    shape, summary = (upload.image_shape, upload.summary) if upload is not None else (None, None)
    while not _end_if_done(store, sweep, trials):
        active = sum(t.status in ACTIVE for t in trials)
        if (len(trials) >= sweep.max_trials or active >= sweep.max_concurrent
                or _giving_up(sweep, trials)):
            break
        proposed = propose(sweep, space, trials)
        hp, error = trial_hyperparameters(sweep, proposed, settings, shape)
        memory = None if error else training_memory_bytes(sweep.model, hp, sweep.dataset,
                                                          settings.resolved_data_dir, shape,
                                                          summary)
        job = store.launch_trial(sweep_id, len(trials), hp, error=error,
                                 max_queued=settings.max_queued_jobs_per_user,
                                 memory_bytes=memory)
        if job is None:  # another process launched this number, the sweep ended, or its
            # owner's queue is full (TRAINYARD_MAX_QUEUED_JOBS_PER_USER): a later pass goes on
            break
        if error is None:
            launched.append(job)
        trials.append(TrialRecord(
            job_id=job.id, number=len(trials), name=job.name, status=job.status,
            hyperparameters=job.hyperparameters, epoch=0, total_epochs=None, step=0,
            error=job.error, created_at=job.created_at, finished_at=job.finished_at,
            objective={}))
    return launched


def judge_epoch(store: Store, sweep: SweepRecord, job_id: int, epoch: int) -> bool:
    """Whether the trial of `job_id` in `sweep`, whose objective for `epoch` is stored, stops
    now: the sweep's pruner, over what the database holds."""
    if sweep.early_stopping.get("method", "none") == "none":
        return False
    trials = store.sweep_trials(sweep.id, sweep.objective_metric)
    # The trial being judged runs: its status row may lag its metrics by a write.
    trials = [replace(t, status=JobStatus.RUNNING) if t.job_id == job_id else t
              for t in trials]
    return should_prune(sweep, dimensions_from_json(sweep.space, sweep.model), trials,
                        job_id, epoch)


def trial_row(sweep: SweepRecord, t: TrialRecord) -> dict[str, Any]:
    """One trial as GET /sweeps/{id} lists it."""
    return {
        "job_id": t.job_id, "number": t.number, "name": t.name, "status": t.status,
        "params": {k: t.hyperparameters.get(k) for k in sweep.space},
        "objective": trial_objective(t),
        "last_objective": t.objective[max(t.objective)] if t.objective else None,
        "epoch": t.epoch, "total_epochs": t.total_epochs,
        "pruned_at_epoch": t.epoch if t.status == JobStatus.PRUNED else None,
        "error": t.error, "created_at": t.created_at, "started_at": t.started_at,
        "finished_at": t.finished_at,
    }


def summary(sweep: SweepRecord, trials: list[TrialRecord]) -> dict[str, Any]:
    """What GET /sweeps/{id} adds to the row: counts per status, the best trial, each trial."""
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    rows = [trial_row(sweep, t) for t in trials]
    scored = [r for r in rows if r["objective"] is not None]
    sign = 1 if sweep.objective_goal == "max" else -1
    best = max(scored, key=lambda r: (sign * r["objective"], -r["number"]), default=None)
    return {"counts": counts, "best": best, "trials": rows}
