"""Data lifecycle: DELETE /jobs/{id}, POST /jobs/delete (by filter, with a dry run) and
GET /usage. The rules of what may go are the store's (db/store/lifecycle.py)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import JobDep, PrincipalDep, StoreDep
from api.errors import (
    ADMIN_ONLY,
    NOT_FOUND,
    UNPARSABLE_BODY,
    answer,
    conflict,
    forbidden,
    invalid,
    job_not_found,
)
from api.schemas.lifecycle import DeleteFilter, DeleteResult, JobDeleted, Skipped, UsageOut
from db.store import NotFound
from db.store.lifecycle import DeleteRefused
from db.tables import utcnow

log = logging.getLogger(__name__)

router = APIRouter(tags=["lifecycle"])

NOT_DELETABLE = answer(409, "The job is queued or running (cancel it first), the parent of a "
                            "fork, or a trial of a running sweep.")


@router.delete(
    "/jobs/{job_id}",
    response_model=JobDeleted,
    responses={**NOT_FOUND, **NOT_DELETABLE},
    summary="Delete a finished job with everything it left",
)
def delete_job(job: JobDep, store: StoreDep, principal: PrincipalDep) -> JobDeleted:
    """Its metrics, rollups, summaries, texts, checkpoints, confusion matrices, attempts and
    logs go with it, in one transaction. Owner or admin (another user's job is a 404)."""
    try:
        report = store.delete_job(job.id)
    except NotFound as exc:  # deleted meanwhile
        raise job_not_found(job.id) from exc
    except DeleteRefused as exc:
        raise conflict(exc.refusal.reason) from exc
    log.info("job %s deleted by %s", job.id, principal.owner)
    return JobDeleted(id=job.id, seconds=round(report.seconds, 3))


@router.post(
    "/jobs/delete",
    response_model=DeleteResult,
    responses={**ADMIN_ONLY, **UNPARSABLE_BODY},
    summary="Delete finished jobs by filter (or count them: dry_run)",
)
def delete_jobs(body: DeleteFilter, store: StoreDep, principal: PrincipalDep) -> DeleteResult:
    """Newest first, in bounded batches (each its own short transaction), so forks go before
    their parents; jobs that may not go are skipped with the reason. A dry run answers the
    same counts and deletes nothing."""
    if (body.status is None and body.model is None and body.older_than_days is None
            and body.sweep_id is None):
        raise invalid(("body", "status"), "give at least one of status, model, "
                      "older_than_days, sweep_id")
    owner = principal.owner_filter
    if body.owner is not None:
        if not principal.is_admin and body.owner != principal.owner:
            raise forbidden("only an admin may delete another user's jobs")
        owner = body.owner
    older_than = None
    if body.older_than_days is not None:
        older_than = utcnow() - dt.timedelta(days=body.older_than_days)
    ids = store.match_jobs(owner=owner, statuses=body.status, model=body.model,
                           older_than=older_than, sweep_id=body.sweep_id)
    if body.dry_run:
        ok, skipped = store.plan_deletion(ids)
        return DeleteResult(matched=len(ids), deleted=len(ok), dry_run=True, ids=ok,
                            skipped=[Skipped(id=r.job_id, reason=r.reason) for r in skipped])
    report = store.delete_jobs(ids)
    log.info("%s deleted %s jobs by filter (%s skipped) in %.2f s", principal.owner,
             report.deleted, len(report.skipped), report.seconds)
    return DeleteResult(matched=report.matched, deleted=report.deleted, ids=report.deleted_ids,
                        skipped=[Skipped(id=r.job_id, reason=r.reason) for r in report.skipped],
                        seconds=round(report.seconds, 3))


@router.get("/usage", response_model=UsageOut, responses=ADMIN_ONLY,
            summary="What each user stores: jobs, metric points, checkpoints, datasets, logs")
def usage(store: StoreDep, principal: PrincipalDep,
          owner: Annotated[str | None, Query(min_length=1, max_length=100, description=(
              "Admins: one user (default: every user). Others see only their own."))] = None,
          ) -> UsageOut:
    if owner is not None and not principal.is_admin and owner != principal.owner:
        raise forbidden("only an admin may see another user's usage")
    users = store.usage(owner if owner is not None else principal.owner_filter)
    return UsageOut(users=list(users.values()),
                    database=store.sqlite_space() if principal.is_admin else {})
