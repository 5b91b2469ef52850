"""The sweep's decisions, taken by Optuna: which hyperparameters the next trial gets, and
whether a trial stops at this epoch.

Optuna holds no state of ours between decisions. For each one, an in-memory study is rebuilt
from the sweep's row and its trial jobs (db/store/sweeps.py) with `create_trial`/`add_trial`,
and asked through `ask` (a proposal) or the pruner's `prune` (a stop). So the database stays
the one truth, a decision does not depend on which process takes it, and a crash loses no
search state: there is none outside our tables. (Optuna's own RDB storage would be a second
truth to keep in step with the jobs, and its tables and `alembic_version` collide with ours in
one schema.)

Reproducible: trial n is proposed by a sampler seeded with (sweep seed, n), over the same
history; grid and random proposals depend on nothing else, TPE also on the results known when
the trial was launched (the same with `max_concurrent` 1).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState, create_trial

from core.states import JobStatus
from sweeps.space import Dimension

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Median pruning waits for this many completed trials (or a fifth of the sweep, if fewer).
MEDIAN_STARTUP_TRIALS = 5


def _encode(value: Any) -> Any:
    """A value as an Optuna categorical choice: lists (hidden_sizes) become JSON text."""
    return json.dumps(list(value)) if isinstance(value, list | tuple) else value


def _decode(value: Any, dim: Dimension) -> Any:
    if dim.type == "int_list":
        return json.loads(value)
    return value


def distributions(space: dict[str, Dimension]) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for name, d in space.items():
        if d.values is not None:
            out[name] = CategoricalDistribution([_encode(v) for v in d.values])
        elif d.type == "int":
            out[name] = IntDistribution(int(d.low), int(d.high), log=d.log,
                                        step=int(d.step or 1))
        else:
            out[name] = FloatDistribution(d.low, d.high, log=d.log, step=d.step)
    return out


def _seed(seed: int, number: int) -> int:
    return (seed * 1_000_003 + number) % 2**32


def sampler(method: str, space: dict[str, Dimension], seed: int, number: int
            ) -> optuna.samplers.BaseSampler:
    if method == "grid":
        # Trial n takes grid point n (GridSampler numbers its points in a fixed order).
        grid = {name: [_encode(v) for v in d.grid_values()] for name, d in space.items()}
        return optuna.samplers.GridSampler(grid, seed=seed)
    if method == "tpe":
        # constant_liar: trials still running count as bad guesses, so concurrent
        # proposals spread out instead of piling on one point.
        return optuna.samplers.TPESampler(seed=_seed(seed, number), constant_liar=True)
    return optuna.samplers.RandomSampler(seed=_seed(seed, number))


def pruner(early_stopping: dict[str, Any], max_trials: int) -> optuna.pruners.BasePruner:
    method = early_stopping.get("method", "none")
    min_epochs = int(early_stopping.get("min_epochs", 1))
    if method == "median":
        startup = min(MEDIAN_STARTUP_TRIALS, max(1, max_trials // 5))
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=min_epochs)
    if method == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=min_epochs,
            reduction_factor=int(early_stopping.get("reduction_factor", 3)))
    return optuna.pruners.NopPruner()


def _rung_steps(early_stopping: dict[str, Any], before: int) -> list[int]:
    """The epochs at which ASHA's rungs are judged, below `before`."""
    if early_stopping.get("method") != "asha":
        return []
    base, factor = int(early_stopping.get("min_epochs", 1)), int(
        early_stopping.get("reduction_factor", 3))
    steps, r = [], 0
    while base * factor**r < before:
        steps.append(base * factor**r)
        r += 1
    return steps


def _params(trial: Any, space: dict[str, Dimension], dists: dict[str, BaseDistribution]
            ) -> dict[str, Any] | None:
    """The trial's searched values in Optuna's terms; None if one lies outside the space
    (then the trial informs nothing)."""
    out = {}
    for name, dist in dists.items():
        value = _encode(trial.hyperparameters.get(name))
        if isinstance(dist, CategoricalDistribution):
            inside = value in dist.choices
        else:
            inside = (isinstance(value, int | float) and not isinstance(value, bool)
                      and dist.low <= value <= dist.high)
        if not inside:
            return None
        out[name] = value
    return out


def _frozen(trial: Any, space, dists, early_stopping, current: tuple[int, int] | None
            ) -> FrozenTrial | None:
    params = _params(trial, space, dists)
    if params is None:
        return None
    values = {e: v for e, v in trial.objective.items() if math.isfinite(v)}
    if current is not None and trial.job_id == current[0]:
        values = {e: v for e, v in values.items() if e <= current[1]}
    last = trial.epoch or (max(values) if values else 0)
    status = trial.status
    attrs: dict[str, Any] = {}
    # ASHA's record of the rungs each trial reached, as its pruner wrote it epoch by epoch;
    # for the trial being judged only the rungs of earlier epochs (the pruner writes this one).
    limit = current[1] if current is not None and trial.job_id == current[0] else last + 1
    for r, step in enumerate(_rung_steps(early_stopping, limit)):
        if step in values:
            attrs[f"completed_rung_{r}"] = values[step]
    if status == JobStatus.SUCCEEDED:
        final = values.get(last)
        if final is None:
            return create_trial(state=TrialState.FAIL, params=params, distributions=dists)
        return create_trial(state=TrialState.COMPLETE, value=final, params=params,
                            distributions=dists, intermediate_values=values,
                            system_attrs=attrs)
    if status == JobStatus.PRUNED:
        return create_trial(state=TrialState.PRUNED, params=params, distributions=dists,
                            intermediate_values=values, system_attrs=attrs)
    if status in (JobStatus.QUEUED, JobStatus.RUNNING):
        return create_trial(state=TrialState.RUNNING, params=params, distributions=dists,
                            intermediate_values=values, system_attrs=attrs)
    return create_trial(state=TrialState.FAIL, params=params, distributions=dists)


def rebuild(sweep: Any, space: dict[str, Dimension], trials: Sequence[Any],
            current: tuple[int, int] | None = None) -> tuple[optuna.Study, dict[int, FrozenTrial]]:
    """An in-memory study holding the sweep's trials in trial order; `current` = (job id,
    epoch) of a trial being judged: its values after that epoch are left out. Returns the
    study and the FrozenTrial of each job id."""
    dists = distributions(space)
    study = optuna.create_study(
        direction="maximize" if sweep.objective_goal == "max" else "minimize",
        sampler=sampler(sweep.method, space, sweep.seed, len(trials)),
        pruner=pruner(sweep.early_stopping, sweep.max_trials),
    )
    by_job: dict[int, FrozenTrial] = {}
    for trial in trials:
        frozen = _frozen(trial, space, dists, sweep.early_stopping, current)
        if frozen is None:  # keep the numbering: an uninformative failed trial
            frozen = create_trial(state=TrialState.FAIL)
        study.add_trial(frozen)
        by_job[trial.job_id] = study.get_trials(deepcopy=False)[-1]
    return study, by_job


def propose(sweep: Any, space: dict[str, Dimension], trials: Sequence[Any]) -> dict[str, Any]:
    """The hyperparameters of trial number len(trials): Optuna's next proposal."""
    study, _ = rebuild(sweep, space, trials)
    asked = study.ask(distributions(space))
    return {name: _decode(asked.params[name], dim) for name, dim in space.items()}


def should_prune(sweep: Any, space: dict[str, Dimension], trials: Sequence[Any], job_id: int,
                 epoch: int) -> bool:
    """Whether the trial of `job_id`, having reported its objective for `epoch`, stops now."""
    if sweep.early_stopping.get("method", "none") == "none":
        return False
    study, by_job = rebuild(sweep, space, trials, current=(job_id, epoch))
    frozen = by_job.get(job_id)
    if frozen is None or frozen.state != TrialState.RUNNING or epoch not in (
            frozen.intermediate_values or {}):
        return False
    return bool(study.pruner.prune(study, frozen))


def importances(sweep: Any, space: dict[str, Dimension], trials: Sequence[Any]
                ) -> tuple[dict[str, float], int]:
    """How much each searched hyperparameter explains the objective, by Optuna's default
    evaluator (PED-ANOVA) over the completed trials: ({name: importance, summing to 1}, the
    trials used). Empty below two completed trials, or when no parameter varies among them."""
    study, _ = rebuild(sweep, space, trials)
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(completed) < 2:
        return {}, len(completed)
    try:
        found = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # e.g. every completed trial has the same values
        return {}, len(completed)
    return {name: float(v) for name, v in found.items()}, len(completed)
