"""Dependencies shared by the routes, in the style of full-stack-fastapi-template.

The app built by `create_app` holds one Settings, one Store and one Celery app on
`app.state`; routes ask for them with the `*Dep` annotations below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from celery import Celery
from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError

from api.auth import PrincipalDep
from db.store import JobRecord, Store
from core.settings import Settings


def app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


SettingsDep = Annotated[Settings, Depends(app_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
CeleryDep = Annotated[Celery, Depends(get_celery)]


# ---- errors, in the two shapes clients parse ----
# 422: FastAPI's own validation shape, {"detail": [{"loc": [...], "msg": ..., "type": ...}]},
#      also for the checks only the server can make (catalogue ranges, dataset kinds).
# 404/409/413/503: {"detail": "a sentence"}.


def invalid(loc: Sequence[str | int], msg: str) -> RequestValidationError:
    """A 422 naming one field, in the same shape as FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": tuple(loc), "msg": msg}])


def job_not_found(job_id: int) -> HTTPException:
    return HTTPException(status_code=404, detail=f"job {job_id} not found")


# Job and checkpoint ids are INTEGER columns (db/tables.py): larger ids cannot exist, and
# Postgres would answer them with "integer out of range" (a 500), so they get a 404 before
# any query. Raise this if the columns ever become BIGINT.
MAX_ID = 2**31 - 1


def get_job_or_404(job_id: int, store: StoreDep, principal: PrincipalDep) -> JobRecord:
    """The job, if it exists and the caller may see it; else the same 404 either way, so
    another user's job ids reveal nothing."""
    job = store.get_job(job_id) if 1 <= job_id <= MAX_ID else None
    if job is None or not principal.can_see(job.owner):
        raise job_not_found(job_id)
    return job


JobDep = Annotated[JobRecord, Depends(get_job_or_404)]
