"""/compare: several runs side by side, with the settings that differ between them."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from api.auth import PrincipalDep
from api.deps import MAX_ID, SettingsDep, StoreDep, invalid
from api.schemas import (
    CompareOut,
    CompareSeriesOut,
    ErrorOut,
    ValidationErrorOut,
    check_storable_json,
    finite_or_none,
)

router = APIRouter(prefix="/compare", tags=["compare"])

MIN_RUNS, MAX_RUNS = 2, 1000
_MISSING = object()


def _parse_ids(raw: str) -> list[int]:
    ids: list[int] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            ids.append(int(part))
        except ValueError:
            raise invalid(("query", "ids"), f"{part[:40]!r} is not a job id (an integer)") from None
    ids = list(dict.fromkeys(ids))  # duplicates would compare a run with itself
    if not MIN_RUNS <= len(ids) <= MAX_RUNS:
        raise invalid(
            ("query", "ids"),
            f"give between {MIN_RUNS} and {MAX_RUNS} distinct job ids, got {len(ids)}",
        )
    return ids


def _canonical(value: Any) -> str:
    # JSON text tells 1 from True and 1.0 from "1", which == does not.
    return json.dumps(value, sort_keys=True) if value is not _MISSING else "<missing>"


def differing_keys(runs: list[dict[str, Any]]) -> list[str]:
    """model, dataset, then hyperparameter keys whose values are not the same in every run.

    A hyperparameter that some runs lack counts as differing.
    """
    keys = [k for k in ("model", "dataset") if len({_canonical(r[k]) for r in runs}) > 1]
    hp_keys = sorted({k for r in runs for k in r["hyperparameters"]})
    for key in hp_keys:
        values = {_canonical(r["hyperparameters"].get(key, _MISSING)) for r in runs}
        if len(values) > 1:
            keys.append(key)
    return keys


def visible_jobs(store: Any, principal: Any, job_ids: list[int]) -> dict[int, Any]:
    """The jobs `job_ids`, all of which must exist and be the caller's to see; else 404 naming
    the others. Another user's run is "not found", exactly like a missing one."""
    jobs = store.get_jobs(i for i in job_ids if 1 <= i <= MAX_ID)
    visible = {i: job for i, job in jobs.items() if principal.can_see(job.owner)}
    missing = [i for i in job_ids if i not in visible]
    if missing:
        shown = ", ".join(str(i) for i in missing[:20]) + (" ..." if len(missing) > 20 else "")
        noun = "job" if len(missing) == 1 else "jobs"
        raise HTTPException(status_code=404, detail=f"{noun} {shown} not found")
    return visible


@router.get(
    "",
    response_model=CompareOut,
    responses={404: {"model": ErrorOut, "description": "Some of the ids are unknown."}},
    summary="Compare runs: config, final and best metrics, differing settings",
)
def compare(
    store: StoreDep,
    principal: PrincipalDep,
    ids: Annotated[
        str,
        Query(max_length=30_000, description="Comma-separated job ids, 2 to 1000.",
              examples=["1,2", "1, 2, 3"]),
    ],
) -> dict[str, Any]:
    job_ids = _parse_ids(ids)
    jobs = visible_jobs(store, principal, job_ids)
    summaries = store.metric_summaries(job_ids)
    runs = []
    for job_id in job_ids:
        job = jobs[job_id]
        metrics = summaries.get(job_id, {})
        runs.append(
            {
                "id": job.id,
                "name": job.name,
                "model": job.model,
                "dataset": job.dataset,
                "status": job.status,
                "hyperparameters": job.hyperparameters,
                "final": {k: finite_or_none(v["final"]) for k, v in metrics.items()},
                "best": {k: finite_or_none(v["best"]) for k, v in metrics.items()},
            }
        )
    return {"runs": runs, "differing": differing_keys(runs)}


# ---- the dashboard's compare page: many runs' curves in one request ------------------------

DEFAULT_SERIES = ("train_loss", "val_loss", "val_accuracy", "val_perplexity")
MAX_SERIES_NAMES = 20
MAX_SERIES_RUNS = 1000
MAX_LABEL_KEYS = 6
# The cap on one request (TRAINYARD_MAX_COMPARE_SERIES) counts series of this many points.
DEFAULT_MAX_POINTS = 200


def _label_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def run_label(run: dict[str, Any], differing: list[str]) -> str:
    """A run named by the settings that differ: 'lr=0.01, activation=sigmoid'."""
    parts = []
    keys = [k for k in differing if k in ("model", "dataset") or k in run["hyperparameters"]]
    for key in keys[:MAX_LABEL_KEYS]:
        value = run[key] if key in ("model", "dataset") else run["hyperparameters"][key]
        parts.append(f"{key}={_label_value(value)}")
    if len(keys) > MAX_LABEL_KEYS:
        parts.append("…")
    return ", ".join(parts) if parts else (run["name"] or f"job {run['id']}")


def _parse_run_ids(raw: str) -> list[int]:
    """Comma-separated ids and ranges ("1,2,10-20"), 1 to MAX_SERIES_RUNS distinct ones."""
    ids: list[int] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        first, sep, last = part.partition("-")
        try:
            low = int(first)
            high = int(last) if sep else low
        except ValueError:
            raise invalid(
                ("query", "ids"), f"{part[:40]!r} is not a job id or a range like 10-20"
            ) from None
        if high < low or high - low >= MAX_SERIES_RUNS:
            raise invalid(("query", "ids"), f"{part[:40]!r} is not a usable range")
        ids.extend(range(low, high + 1))
        if len(ids) > MAX_SERIES_RUNS * 2:
            break
    ids = list(dict.fromkeys(ids))
    if not 1 <= len(ids) <= MAX_SERIES_RUNS:
        raise invalid(
            ("query", "ids"), f"give between 1 and {MAX_SERIES_RUNS} job ids, got {len(ids)}"
        )
    return ids


def check_series_cap(runs: int, names: int, names_given: bool, max_points: int, cap: int) -> None:
    """422 when one request would read more than `cap` series (runs x names), or more than
    `cap` series' worth of the default 200 points (series x max_points), naming the field to
    change and the largest value allowed. The names count whether or not runs have them: the
    cost of looking is paid either way."""
    series = runs * names
    if series > cap:
        names_fit, runs_fit = cap // runs, cap // names
        if names_fit and (names_given or not runs_fit):
            field, fix = "names", f"ask for at most {names_fit} metric names with {runs} runs"
        elif runs_fit:
            field, fix = "ids", f"compare at most {runs_fit} runs with {names} names"
        else:
            field, fix = "ids", "compare fewer runs, with fewer names"
        raise invalid(
            ("query", field),
            f"{runs} runs x {names} metric names is {series:,} series; one request may read at "
            f"most {cap:,} (TRAINYARD_MAX_COMPARE_SERIES): {fix}",
        )
    budget = cap * DEFAULT_MAX_POINTS
    if series * max_points > budget:
        raise invalid(
            ("query", "max_points"),
            f"{series:,} series x {max_points} points is over the {budget:,} points one request "
            f"may read (TRAINYARD_MAX_COMPARE_SERIES x {DEFAULT_MAX_POINTS}): give max_points "
            f"<= {budget // series} for {series:,} series",
        )


@router.get(
    "/series",
    response_model=CompareSeriesOut,
    responses={
        404: {"model": ErrorOut, "description": "Some of the ids are unknown."},
        422: {"model": ValidationErrorOut, "description": "Bad ids, names or max_points, or "
              "more runs x names (or points) than one request may read "
              "(TRAINYARD_MAX_COMPARE_SERIES), with the field to change and the maximum."},
    },
    summary="Many runs' metric curves in one request, downsampled on the server",
)
def compare_series(
    store: StoreDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    ids: Annotated[
        str,
        Query(
            max_length=30_000,
            description="Job ids and ranges, comma-separated: 1,2,10-20 (1 to 1000 runs; "
            "runs x names at most TRAINYARD_MAX_COMPARE_SERIES, 5000 by default).",
            examples=["1,2", "1-3", "1,2-3"],
        ),
    ],
    names: Annotated[
        str | None,
        Query(
            max_length=4_000,
            description="Comma-separated metric names; default: "
            + ",".join(DEFAULT_SERIES),
            examples=["train_loss,val_accuracy"],
        ),
    ] = None,
    max_points: Annotated[
        int, Query(ge=2, le=5_000, description="At most this many points per series; runs x "
                   "names x max_points at most TRAINYARD_MAX_COMPARE_SERIES x 200.")
    ] = DEFAULT_MAX_POINTS,
) -> dict[str, Any]:
    """What the compare page draws: each run's config and a label made of the settings that
    differ, and for each asked metric its curve (bucket means over equal step ranges, ending on
    the exact final point), its final and best value, and the mean of each epoch."""
    job_ids = _parse_run_ids(ids)
    wanted = list(DEFAULT_SERIES)
    if names is not None:
        wanted = list(dict.fromkeys(n.strip() for n in names.split(",") if n.strip()))
        if not 1 <= len(wanted) <= MAX_SERIES_NAMES:
            raise invalid(("query", "names"), f"give 1 to {MAX_SERIES_NAMES} metric names")
        try:
            check_storable_json(wanted)
        except ValueError as exc:
            raise invalid(("query", "names"), str(exc)) from exc
    check_series_cap(len(job_ids), len(wanted), names is not None, max_points,
                     settings.max_compare_series)
    jobs = visible_jobs(store, principal, job_ids)
    metric_names = store.metric_names_many(job_ids)
    series = store.bulk_series(job_ids, wanted, max_points)
    runs = [
        {
            "id": job.id,
            "name": job.name,
            "model": job.model,
            "dataset": job.dataset,
            "status": job.status,
            "device": job.device,
            "hyperparameters": job.hyperparameters,
            "created_at": job.created_at,
            "metric_names": metric_names.get(job.id, []),
        }
        for job in (jobs[i] for i in job_ids)
    ]
    differing = differing_keys(runs)
    for run in runs:
        run["label"] = run_label(run, differing)
    return {
        "runs": runs,
        "differing": differing,
        "names": wanted,
        "max_points": max_points,
        "series": {str(job_id): by_name for job_id, by_name in series.items()},
    }
