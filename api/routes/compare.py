"""/compare: several runs side by side, with the settings that differ between them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from api.deps import PrincipalDep, SeriesCacheDep, SettingsDep, StoreDep, visible_jobs
from api.errors import RUNS_NOT_FOUND, SERIES_REQUEST_INVALID, invalid
from api.params import parse_job_ids, parse_metric_names
from api.schemas import CompareOut, CompareRun, CompareSeriesOut, SeriesRun
from api.services.compare import differing_keys, run_label
from api.services.settled_series import settled_ids, settled_series, write_behind
from core.metrics import COMPARE_NAMES
from db.store import JobRecord

router = APIRouter(prefix="/compare", tags=["compare"])

MIN_RUNS, MAX_RUNS = 2, 1000


@router.get(
    "",
    response_model=CompareOut,
    responses=RUNS_NOT_FOUND,
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
) -> CompareOut:
    job_ids = parse_job_ids(ids, fewest=MIN_RUNS, most=MAX_RUNS)
    jobs = visible_jobs(store, principal, job_ids)
    summaries = store.metric_summaries(job_ids)
    runs = [jobs[i] for i in job_ids]
    return CompareOut(
        runs=[_compare_run(job, summaries.get(job.id, {})) for job in runs],
        differing=differing_keys(runs),
    )


def _compare_run(job: JobRecord, metrics: dict[str, dict[str, Any]]) -> CompareRun:
    return CompareRun.from_record(
        job,
        final={k: v["final"] for k, v in metrics.items()},
        best={k: v["best"] for k, v in metrics.items()},
    )


# ---- the dashboard's compare page: many runs' curves in one request ------------------------

DEFAULT_SERIES = COMPARE_NAMES
MAX_SERIES_NAMES = 20
MAX_SERIES_RUNS = 1000
# The cap on one request (TRAINYARD_MAX_COMPARE_SERIES) counts series of this many points.
DEFAULT_MAX_POINTS = 200


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
    responses={**RUNS_NOT_FOUND, **SERIES_REQUEST_INVALID},
    summary="Many runs' metric curves in one request, downsampled on the server",
)
def compare_series(
    store: StoreDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    cache: SeriesCacheDep,
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
) -> Response:
    """What the compare page draws: each run's config and a label made of the settings that
    differ, and for each asked metric its curve (bucket means over equal step ranges, ending on
    the exact final point), its final and best value, and the mean of each epoch."""
    job_ids = parse_job_ids(ids, fewest=1, most=MAX_SERIES_RUNS, ranges=True)
    wanted = list(DEFAULT_SERIES)
    if names is not None:
        wanted = parse_metric_names(names, fewest=1, most=MAX_SERIES_NAMES)
    check_series_cap(len(job_ids), len(wanted), names is not None, max_points,
                     settings.max_compare_series)
    jobs = visible_jobs(store, principal, job_ids)
    metric_names = store.metric_names_many(job_ids)
    finished = settled_ids(jobs.values(), settings.lease_seconds)
    # Their curves from this process's LRU, else from the stored summaries, else computed
    # (and then stored, once the answer has gone); live runs' curves always computed.
    series, to_store = settled_series(store, cache, job_ids, finished, wanted, max_points,
                                      summaries=settings.compare_summaries)
    runs = [jobs[i] for i in job_ids]
    differing = differing_keys(runs)
    answer = CompareSeriesOut(
        runs=[
            SeriesRun.from_record(job, label=run_label(job, differing),
                                  metric_names=metric_names.get(job.id, []))
            for job in runs
        ],
        differing=differing,
        names=wanted,
        max_points=max_points,
        series={str(job_id): by_name for job_id, by_name in series.items()},
    )
    # Serialised here by pydantic's own encoder, in one pass: FastAPI would turn the model
    # back into Python objects and hand them to json.dumps, a third of a second for the
    # 123,000 points of 1,000 runs. The declared response_model still documents the answer.
    return Response(answer.model_dump_json(), media_type="application/json",
                    background=write_behind(store, max_points, to_store))
