"""/jobs: submit, list, inspect, reprioritise and cancel training jobs; read metrics, texts and
checkpoints."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter

from api.deps import (
    MAX_ID,
    CeleryDep,
    JobDep,
    PrincipalDep,
    SeriesCacheDep,
    SettingsDep,
    StoreDep,
    get_job_or_404,
    visible_job,
)
from api.errors import (
    JOB_FINISHED,
    NOT_FOUND,
    QUEUE_FULL,
    UNPARSABLE_BODY,
    answer,
    checkpoint_not_found,
    conflict,
    invalid,
    job_not_found,
    too_many_queued,
)
from api.params import parse_metric_names
from api.schemas import (
    CheckpointOut,
    DatasetOut,
    JobCreate,
    JobDetail,
    JobList,
    JobOut,
    JobPatch,
    JobStatus,
    MetricSeries,
    TextSample,
)
from api.security import Principal
from api.services import forks
from api.services.datasets import find_dataset, image_shape
from api.services.queue import queue_info
from api.services.settled_series import settled_ids, settled_series, write_behind
from db.store import InvalidTransition, JobRecord, NotFound, QuotaExceeded
from db.store.series import curve_points
from db.tables import PRIORITY_MAX, PRIORITY_MIN
from models import check_job, training_memory_bytes
from models.registry import FAMILIES, MODEL_NAMES, SpecError
from worker.celery_app import enqueue_job

log = logging.getLogger(__name__)

router = APIRouter(prefix="/jobs", tags=["jobs"])

MAX_METRIC_NAMES = 200
# GET /jobs/{id}/metrics' answer (MetricSeries' shape, built from checked values).
_METRIC_SERIES_JSON = TypeAdapter(dict[str, dict[str, list[dict[str, Any]]]])


def _spec_error(exc: SpecError):
    return invalid(("body", *str(exc.field).split(".", 1)), exc.message)


def _validated_spec(body: JobCreate, settings: Any, store: Any, owner: str,
                    hyperparameters: dict[str, Any], found: DatasetOut | None
                    ) -> dict[str, Any]:
    """Check the job (with `hyperparameters`: the body's, or a fork's) against the catalogue
    and its dataset (`found`: the built-in one or the owner's upload, None when there is
    none); return the filled hyperparameters."""
    try:
        # Refuse what would not fit before it is queued.
        return check_job(
            body.model, hyperparameters, body.dataset,
            lambda _name: found.kind if found is not None else None,
            data_dir=settings.resolved_data_dir, max_parameters=settings.max_model_parameters,
            max_activation_bytes=settings.max_activation_bytes,
            image_shape=image_shape(found) if found is not None else None,
        )
    except SpecError as exc:
        raise _spec_error(exc) from exc


def _dataset_columns(body: JobCreate, found: DatasetOut | None) -> dict[str, Any]:
    """An upload is recorded by its bare name plus the exact version and sha256 it resolved
    to now (`name` is the newest version at submit: a later upload changes nothing for this
    job); a built-in dataset by its name alone."""
    if found is None or found.source != "uploaded":
        return {"dataset": body.dataset}
    return {"dataset": found.name, "dataset_version": found.version,
            "dataset_sha256": found.sha256}


def _fork_spec(body: JobCreate, settings: Any, store: Any, principal: Principal,
               found: DatasetOut | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job's filled hyperparameters and, for a fork (`from_checkpoint`), its parent
    columns (api/services/forks.py). A parent the caller may not see is a 404, as any job."""
    fork = body.from_checkpoint
    if fork is None:
        return _validated_spec(body, settings, store, principal.owner, body.hyperparameters,
                               found), {}
    parent = get_job_or_404(fork.job, store, principal)
    try:
        changed = forks.fork_hyperparameters(parent, body.model, body.hyperparameters)
    except SpecError as exc:
        raise _spec_error(exc) from exc
    hyperparameters = _validated_spec(body, settings, store, principal.owner, changed, found)
    try:
        columns = forks.parent_columns(
            store, parent, fork.checkpoint, model=body.model,
            dataset=_dataset_columns(body, found)["dataset"],
            hyperparameters=hyperparameters, resume_optimizer=fork.resume_optimizer,
            data_dir=settings.resolved_data_dir,
            image_shape=image_shape(found) if found is not None else None)
    except SpecError as exc:
        raise _spec_error(exc) from exc
    return hyperparameters, columns


@router.post(
    "",
    status_code=201,
    response_model=JobDetail,
    responses={
        **UNPARSABLE_BODY,
        **QUEUE_FULL,
        **answer(404, "A fork's parent (from_checkpoint.job) does not exist, or is another "
                 "user's job."),
        200: {"model": JobDetail,
              "description": "A retry: the job that the first request with this Idempotency-Key "
              "created."},
    },
    summary="Submit a training job",
)
def submit_job(
    body: JobCreate,
    store: StoreDep,
    settings: SettingsDep,
    celery: CeleryDep,
    principal: PrincipalDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1, max_length=200,
            description="A client-chosen key: a retried POST with the same key returns the "
            "job the first one created (200) instead of creating another.",
        ),
    ] = None,
) -> JobDetail:
    owner = principal.owner
    check_priority(body.priority, principal, settings)
    # Resolved once: the check, the size estimate and the recorded version agree.
    found = find_dataset(body.dataset, settings, store, owner)
    hyperparameters, parent_columns = _fork_spec(body, settings, store, principal, found)
    spec = {"model": body.model, **_dataset_columns(body, found),
            "hyperparameters": hyperparameters,
            "device": body.device, "name": body.name, "priority": body.priority,
            "gpus": body.gpus, **parent_columns,
            "memory_bytes": training_memory_bytes(
                body.model, hyperparameters, body.dataset, settings.resolved_data_dir,
                image_shape(found) if found is not None else None,
                found.summary if found is not None else None)}
    # One user cannot fill the queue: the store counts and inserts as one step, so concurrent
    # submissions cannot overshoot the cap; a retry of a request that made its job is no new job.
    cap = settings.max_queued_jobs_per_user
    try:
        if idempotency_key is not None:
            job, created = store.create_job_once(idempotency_key, owner=owner, max_queued=cap,
                                                 **spec)
        else:
            job, created = store.create_job(owner=owner, max_queued=cap, **spec), True
    except QuotaExceeded as exc:
        raise too_many_queued(owner, exc.queued, exc.limit) from exc
    if not created:  # the key's job exists: a retry, or a reuse of the key
        if _differs(job, spec, body):
            raise invalid(
                ("header", "Idempotency-Key"),
                f"Idempotency-Key {idempotency_key!r} was used for job {job.id} with a "
                "different request; use a new key for a new job",
            )
        # A retry: the first request created (and sent) it; the reconciler re-sends a
        # queued job whose message was lost, so nothing to send here.
        response.status_code = 200
        return JobDetail.from_record(job, latest_metrics=store.latest_metrics(job.id),
                                     infra_failures=job.infra_failures)
    try:
        enqueue_job(celery, job.id, job.device)
    except Exception as exc:  # noqa: BLE001 - the broker being down must not fail the request
        # The database is the truth: the job stays queued and the reconciler re-sends it.
        log.warning("job %s saved as queued but not sent to the broker: %r", job.id, exc)
    return JobDetail.from_record(job)


def check_priority(priority: int, principal: Principal, settings: Any) -> None:
    """Ordinary users may not jump the queue past the cap; admins may use the whole range."""
    cap = settings.max_user_priority
    if priority > cap and not principal.is_admin:
        raise invalid(("body", "priority"),
                      f"priority must be at most {cap} for a user who is not an admin "
                      f"(TRAINYARD_MAX_USER_PRIORITY); admins may use {PRIORITY_MIN} to "
                      f"{PRIORITY_MAX}")


def _differs(job: JobRecord, spec: dict[str, Any], body: JobCreate) -> bool:
    """Whether a retried request asks for something else than the job its key created.
    (Its priority may have been changed since with PATCH: not a difference; nor a fork's
    default checkpoint, the parent's newest, which may be a later one by now.)"""
    fork = body.from_checkpoint
    return (
        (job.model, job.dataset, job.device) != (spec["model"], spec["dataset"], spec["device"])
        or job.hyperparameters != spec["hyperparameters"] or job.gpus != spec["gpus"]
        or (spec["name"] is not None and job.name != spec["name"])
        or job.parent_job_id != (fork.job if fork else None)
        or job.resume_optimizer != (fork.resume_optimizer if fork else False)
        or (fork is not None and fork.checkpoint is not None
            and job.parent_checkpoint_id != fork.checkpoint)
    )


# What the jobs list shows per job: its family's headline metric, else its validation loss
# (a job that stopped before its first evaluation reports neither).
FALLBACK_METRIC = "val_loss"
LISTED_METRICS = (*dict.fromkeys(f.headline_metric for f in FAMILIES.values()), FALLBACK_METRIC)


def _best_metric(model: str, bests: dict[str, float | None]) -> dict[str, Any] | None:
    headline = FAMILIES[model].headline_metric if model in FAMILIES else None
    for name in (headline, FALLBACK_METRIC):
        if name in bests:
            return {"name": name, "value": bests[name]}
    return None


@router.get("", response_model=JobList, summary="List jobs, newest first")
def list_jobs(
    store: StoreDep,
    principal: PrincipalDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    model: Annotated[str | None, Query(description="Only jobs of this model.")] = None,
    sweep_id: Annotated[int | None, Query(ge=1, le=2**31 - 1,
                                          description="Only this sweep's trials.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    before: Annotated[
        int | None,
        Query(ge=1, le=2**31, description="Keyset paging: the jobs just older than this id."),
    ] = None,
    after: Annotated[
        int | None,
        Query(ge=0, le=2**31 - 1, description="Keyset paging: the jobs just newer than this id."),
    ] = None,
) -> JobList:
    if model is not None and model not in MODEL_NAMES:
        raise invalid(("query", "model"), f"model must be one of {', '.join(MODEL_NAMES)}")
    if before is not None and after is not None:
        raise invalid(("query", "after"), "give before or after, not both")
    if (before is not None or after is not None) and offset:
        raise invalid(("query", "offset"), "give offset or before/after, not both")
    with store.reading():  # the dashboard's list poll: its reads share one session
        if before is not None or after is not None:
            # Keyset: each page is an index range from its edge, as fast deep in the list as
            # at its top, and stable while new jobs arrive.
            jobs, total, offset = store.list_jobs_keyset(
                status=status, model=model, limit=limit, before=before, after=after,
                owner=principal.owner_filter, sweep_id=sweep_id,
            )
        else:
            jobs, total = store.list_jobs(status=status, model=model, limit=limit,
                                          offset=offset, owner=principal.owner_filter,
                                          sweep_id=sweep_id)
        bests = store.best_metrics([job.id for job in jobs], LISTED_METRICS)
        # One query for the page's queued jobs, whatever their number ("#3 in queue").
        positions = store.queue_positions([job.id for job in jobs if job.status == "queued"])
    items = [
        JobOut.from_record(job, best_metric=_best_metric(job.model, bests.get(job.id, {})),
                           queue_position=positions.get(job.id))
        for job in jobs
    ]
    return JobList(items=items, total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobDetail, responses=NOT_FOUND, summary="One job")
def get_job(job_id: int, store: StoreDep, settings: SettingsDep,
            principal: PrincipalDep) -> JobDetail:
    # The busiest read (dashboards and CLIs poll it): its reads share one session.
    with store.reading():
        job = visible_job(store, principal, job_id)
        # A queued job says where it stands and why it waits (null once it has left the
        # queue, even if it did so since `job` was read).
        facts = (store.queue_facts(job.id, settings.lease_seconds)
                 if job.status == "queued" else None)
        latest, attempts = store.latest_metrics(job.id), store.list_attempts(job.id)
    queue = queue_info(facts, settings.max_running_jobs_per_user,
                       settings.gpu_memory_reserve_bytes,
                       settings.gpu_backfill_seconds) if facts else None
    return JobDetail.from_record(job, latest_metrics=latest, infra_failures=job.infra_failures,
                                 attempt_history=attempts, queue=queue,
                                 queue_position=queue.position if queue else None)


@router.patch(
    "/{job_id}",
    response_model=JobDetail,
    responses={**NOT_FOUND, **JOB_FINISHED, **UNPARSABLE_BODY},
    summary="Change a queued or running job's priority",
)
def patch_job(body: JobPatch, job: JobDep, store: StoreDep, settings: SettingsDep,
              principal: PrincipalDep) -> JobDetail:
    # JobDep already answered 404 for a job the caller may not see: owner or admin only.
    check_priority(body.priority, principal, settings)
    try:
        job = store.set_priority(job.id, body.priority)
    except NotFound as exc:  # deleted between the two queries
        raise job_not_found(job.id) from exc
    except InvalidTransition as exc:
        raise conflict(f"job {job.id} is {exc.current_status}; only a queued or running job's "
                       "priority can change") from exc
    log.info("job %s: priority set to %s by %s", job.id, job.priority, principal.owner)
    return JobDetail.from_record(job, latest_metrics=store.latest_metrics(job.id),
                                 infra_failures=job.infra_failures)


@router.post(
    "/{job_id}/cancel",
    response_model=JobDetail,
    responses={**NOT_FOUND, **JOB_FINISHED},
    summary="Cancel a queued or running job",
)
def cancel_job(job: JobDep, store: StoreDep) -> JobDetail:
    try:
        job = store.cancel_job(job.id)
    except NotFound as exc:  # deleted between the two queries
        raise job_not_found(job.id) from exc
    except InvalidTransition as exc:
        raise conflict(
            f"job {job.id} is {exc.current_status}; only queued or running jobs can be cancelled"
        ) from exc
    return JobDetail.from_record(job)


@router.get(
    "/{job_id}/metrics",
    response_model=MetricSeries,
    responses=NOT_FOUND,
    summary="Metric series, downsampled on the server",
)
def get_metrics(
    job_id: int,
    store: StoreDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    cache: SeriesCacheDep,
    names: Annotated[
        str | None,
        Query(
            max_length=10_000,
            description="Comma-separated metric names, e.g. train_loss,val_loss; default: all.",
        ),
    ] = None,
    max_points: Annotated[
        int, Query(ge=2, le=10_000, description="At most this many points per series.")
    ] = 1000,
) -> Response:
    """Each series at most `max_points` points: the last is the exact final point; the steps
    before it are cut into buckets of consecutive steps, each drawn as the mean of its values
    at its last step. The same curve as GET /compare/series draws for this run."""
    wanted = parse_metric_names(names, fewest=0, most=MAX_METRIC_NAMES) if names else None
    with store.reading():
        job = visible_job(store, principal, job_id)
        wanted = wanted or store.metric_names(job.id)
    # Found as the compare page finds them (api/services/settled_series.py): a run finished
    # over a lease ago from this process's LRU or the stored summaries; a live run downsampled
    # from its rollups.
    found, to_store = settled_series(store, cache, [job.id],
                                     settled_ids([job], settings.lease_seconds), wanted,
                                     max_points, summaries=settings.compare_summaries)
    curves = found.get(job.id, {})
    answer = {"series": {name: curve_points(curves[name]) for name in sorted(curves)}}
    # Encoded by pydantic-core in one pass; the declared response_model documents it.
    return Response(_METRIC_SERIES_JSON.dump_json(answer), media_type="application/json",
                    background=write_behind(store, max_points, to_store))


@router.get(
    "/{job_id}/texts",
    response_model=list[TextSample],
    responses=NOT_FOUND,
    summary="Texts sampled from a language model, per epoch",
)
def get_texts(job: JobDep, store: StoreDep) -> list[dict[str, Any]]:
    return store.list_texts(job.id)


@router.get(
    "/{job_id}/checkpoints",
    response_model=list[CheckpointOut],
    responses=NOT_FOUND,
    summary="The job's checkpoints (without their bytes)",
)
def list_checkpoints(job: JobDep, store: StoreDep, request: Request) -> list[CheckpointOut]:
    return [
        CheckpointOut.from_record(c, download_url=str(
            request.app.url_path_for("download_checkpoint", job_id=job.id, checkpoint_id=c.id)
        ))
        for c in store.list_checkpoints(job.id)
    ]


@router.get(
    "/{job_id}/checkpoints/{checkpoint_id}/download",
    name="download_checkpoint",
    response_class=Response,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "The checkpoint (torch.save bytes; torch.load(weights_only=True)).",
        },
        **NOT_FOUND,
    },
    summary="Download one checkpoint's bytes",
)
def download_checkpoint(job: JobDep, checkpoint_id: int, store: StoreDep) -> Response:
    found = None
    if 1 <= checkpoint_id <= MAX_ID:
        found = store.iter_checkpoint_data(job.id, checkpoint_id)
    if found is None:
        raise checkpoint_not_found(job.id, checkpoint_id)
    record, pieces = found
    filename = f"trainyard-job{job.id}-epoch{record.epoch}-ckpt{record.id}.pt"
    # Streamed a stored piece (16 MiB) at a time: a 1 GB checkpoint never sits in the API's
    # memory. Content-Length is the whole size, so a client sees a download cut short (the
    # checkpoint pruned meanwhile) as incomplete; X-Checksum-SHA256 checks the rest.
    return StreamingResponse(
        pieces,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Content-Length": str(record.size),
            "ETag": f'"{record.sha256}"',
            "X-Checksum-SHA256": record.sha256,
        },
    )

