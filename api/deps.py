"""Dependencies of the routes, in the style of full-stack-fastapi-template.

The app built by `create_app` holds one Settings, one Store, one Celery app and the cache of
finished runs' curves on `app.state`; routes ask for them, for the caller (api/security.py)
and for the job named in their path with the `*Dep` annotations below. The getters of
`app.state` are async: FastAPI runs a plain `def` dependency on a worker thread, a hop that
cost more than the attribute read itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request

from api.errors import job_not_found, jobs_not_found
from api.schemas.common import MAX_ID
from api.security import Principal, current_principal
from api.services.series_cache import FinishedSeriesCache
from core.settings import Settings
from db.store import JobRecord, Store


async def app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_celery(request: Request) -> Celery:
    return request.app.state.celery


async def get_series_cache(request: Request) -> FinishedSeriesCache:
    return request.app.state.series_cache


SettingsDep = Annotated[Settings, Depends(app_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]
SeriesCacheDep = Annotated[FinishedSeriesCache, Depends(get_series_cache)]


# Job and checkpoint ids larger than MAX_ID (api/schemas/common.py) cannot exist, and Postgres
# would answer them with "integer out of range" (a 500), so they get a 404 before any query.


def visible_job(store: Store, principal: Principal, job_id: int) -> JobRecord:
    """The job, if it exists and the caller may see it; else the same 404 either way, so
    another user's job ids reveal nothing."""
    job = store.get_job(job_id) if 1 <= job_id <= MAX_ID else None
    if job is None or not principal.can_see(job.owner):
        raise job_not_found(job_id)
    return job


def get_job_or_404(job_id: int, store: StoreDep, principal: PrincipalDep) -> JobRecord:
    return visible_job(store, principal, job_id)


JobDep = Annotated[JobRecord, Depends(get_job_or_404)]


def visible_jobs(store: Store, principal: Principal,
                 job_ids: Sequence[int]) -> dict[int, JobRecord]:
    """get_job_or_404 for several jobs (ids parsed from a query): all must exist and be the
    caller's to see, else one 404 naming the others."""
    jobs = store.get_jobs(i for i in job_ids if 1 <= i <= MAX_ID)
    visible = {i: job for i, job in jobs.items() if principal.can_see(job.owner)}
    missing = [i for i in job_ids if i not in visible]
    if missing:
        raise jobs_not_found(missing)
    return visible
