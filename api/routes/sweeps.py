"""/sweeps: create a hyperparameter sweep, follow it, cancel it. Its trials are ordinary jobs
(GET /jobs/{id}, compare, cancel, priority), launched by sweeps/driver.py."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import MAX_ID, CeleryDep, PrincipalDep, SettingsDep, StoreDep
from api.errors import NOT_FOUND, UNPARSABLE_BODY, answer, conflict, invalid, not_found
from api.routes.jobs import check_priority
from api.schemas import SweepCreate, SweepImportance, SweepList, SweepOut, SweepStatus
from api.security import Principal
from api.services.datasets import find_dataset
from api.services.importance import IMPORTANCES
from db.store import Store, SweepRecord
from models.registry import SpecError, check_dataset_kind
from sweeps import driver
from sweeps.search import importances
from sweeps.space import check_sweep, dimensions_from_json
from worker.celery_app import enqueue_job

log = logging.getLogger(__name__)

router = APIRouter(prefix="/sweeps", tags=["sweeps"])

SWEEP_FINISHED = answer(409, "The sweep already ended.")


def _out(sweep: SweepRecord, counts: dict[str, int], best: dict[str, Any] | None,
         trials: list[dict[str, Any]]) -> SweepOut:
    fields = sweep.to_dict()
    fields["objective"] = {"metric": fields.pop("objective_metric"),
                           "goal": fields.pop("objective_goal")}
    return SweepOut(**fields, counts={k: v for k, v in counts.items() if v},
                    launched=sum(counts.values()), best=best, trials=trials)


def _detail(store: Store, sweep: SweepRecord) -> SweepOut:
    summary = driver.summary(sweep, store.sweep_trials(sweep.id, sweep.objective_metric))
    return _out(sweep, summary["counts"], summary["best"], summary["trials"])


def _visible(sweep_id: int, store: Store, principal: Principal) -> SweepRecord:
    sweep = store.get_sweep(sweep_id) if 1 <= sweep_id <= MAX_ID else None
    if sweep is None or not principal.can_see(sweep.owner):
        raise not_found(f"sweep {sweep_id} not found")
    return sweep


def _wake(celery: Any, jobs: list) -> None:
    for job in jobs:
        try:
            enqueue_job(celery, job.id, job.device)
        except Exception as exc:  # noqa: BLE001 - the reconciler re-sends a lost wake-up
            log.warning("trial job %s saved as queued but not sent to the broker: %r",
                        job.id, exc)


@router.post("", status_code=201, response_model=SweepOut,
             responses={**UNPARSABLE_BODY}, summary="Create a hyperparameter sweep")
def create_sweep(body: SweepCreate, store: StoreDep, settings: SettingsDep, celery: CeleryDep,
                 principal: PrincipalDep) -> SweepOut:
    check_priority(body.priority, principal, settings)
    try:
        spec = check_sweep(body.model_dump(exclude_none=True), settings.max_sweep_trials)
        found = find_dataset(body.dataset, settings, store, principal.owner)
        if found is None:
            raise SpecError("dataset", f"unknown dataset {body.dataset!r}; GET /datasets "
                                       "lists the available ones")
        check_dataset_kind(body.model, body.dataset, found.kind)
    except SpecError as exc:
        raise invalid(("body", *str(exc.field).split(".")), exc.message) from exc
    # An upload is pinned to the version it names now ("name@2"): every trial trains on it,
    # whatever is uploaded while the sweep runs.
    dataset = found.ref if found.source == "uploaded" else spec.dataset
    sweep = store.create_sweep(
        owner=principal.owner, name=body.name, model=spec.model, dataset=dataset,
        hyperparameters=spec.hyperparameters, space=spec.space_json(), method=spec.method,
        objective_metric=spec.objective_metric, objective_goal=spec.objective_goal,
        max_trials=spec.max_trials, max_concurrent=spec.max_concurrent,
        early_stopping=spec.early_stopping.to_dict(), seed=spec.seed, device=body.device,
        priority=body.priority)
    log.info("sweep %s created by %s: %s, %s trials", sweep.id, principal.owner, spec.method,
             spec.max_trials)
    _wake(celery, driver.advance(store, sweep.id, settings))
    return _detail(store, store.get_sweep(sweep.id) or sweep)


@router.get("", response_model=SweepList, summary="List sweeps, newest first")
def list_sweeps(
    store: StoreDep, principal: PrincipalDep,
    status: Annotated[SweepStatus | None, Query(description="Only sweeps in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> SweepList:
    sweeps, total = store.list_sweeps(owner=principal.owner_filter, limit=limit, offset=offset,
                                      status=status)
    # Counts and the best trial only: two queries for the page, whatever its sweeps' sizes.
    counts = store.trial_counts([sweep.id for sweep in sweeps])
    bests = store.best_trials(sweeps)
    items = [_out(sweep, counts[sweep.id],
                  driver.trial_row(sweep, bests[sweep.id]) if sweep.id in bests else None, [])
             for sweep in sweeps]
    return SweepList(items=items, total=total, limit=limit, offset=offset)


@router.get("/{sweep_id}", response_model=SweepOut, responses=NOT_FOUND,
            summary="One sweep, with its trials")
def get_sweep(sweep_id: int, store: StoreDep, principal: PrincipalDep) -> SweepOut:
    return _detail(store, _visible(sweep_id, store, principal))


@router.post("/{sweep_id}/cancel", response_model=SweepOut,
             responses={**NOT_FOUND, **SWEEP_FINISHED},
             summary="Cancel a sweep: its queued and running trials too")
def cancel_sweep(sweep_id: int, store: StoreDep, principal: PrincipalDep) -> SweepOut:
    sweep = _visible(sweep_id, store, principal)
    cancelled, trial_ids = store.cancel_sweep(sweep.id)
    if cancelled is None:
        current = store.get_sweep(sweep.id)
        raise conflict(f"sweep {sweep.id} is {current.status if current else 'gone'}; only a "
                       "running sweep can be cancelled")
    log.info("sweep %s cancelled by %s (trials %s)", sweep.id, principal.owner, trial_ids)
    return _detail(store, cancelled)


@router.get("/{sweep_id}/importance", response_model=SweepImportance, responses=NOT_FOUND,
            summary="How much each searched hyperparameter explains the objective")
def sweep_importance(sweep_id: int, store: StoreDep, principal: PrincipalDep) -> SweepImportance:
    sweep = _visible(sweep_id, store, principal)
    trials = store.sweep_trials(sweep.id, sweep.objective_metric)
    pruned = sum(t.status == "pruned" for t in trials)
    completed = sum(t.status == "succeeded" for t in trials)
    found, used = IMPORTANCES.get(
        (sweep.id, completed, pruned),
        lambda: importances(sweep, dimensions_from_json(sweep.space, sweep.model), trials))
    note = None
    if used < 2:
        note = "needs two completed trials"
    elif pruned:
        note = (f"computed from the {used} completed trials only: the {pruned} pruned ones "
                "(stopped early as worse) are left out, so this describes the survivors")
    return SweepImportance(importances=found, evaluator="PED-ANOVA (Optuna)", trials_used=used,
                           note=note)
