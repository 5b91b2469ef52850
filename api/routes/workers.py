"""/workers: which worker processes serve the queues and what each is doing; drain one."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from api.deps import PrincipalDep, SettingsDep, StoreDep
from api.errors import ADMIN_ONLY, WORKER_NOT_FOUND, forbidden, worker_not_found
from api.schemas import WorkerList, WorkerOut

log = logging.getLogger(__name__)

router = APIRouter(prefix="/workers", tags=["workers"])

# workers.name is VARCHAR(255); a longer name, or one with NUL (which Postgres text refuses),
# cannot name a worker: a 404 before any query.
MAX_NAME = 255


@router.get("", response_model=WorkerList, summary="Every worker and what it is doing")
def list_workers(store: StoreDep, settings: SettingsDep, principal: PrincipalDep) -> WorkerList:
    workers = store.list_workers(settings.lease_seconds)
    return WorkerList(
        items=[WorkerOut.from_record(w, show_job=principal.can_see(w.job_owner or ""))
               for w in workers],
        lease_seconds=settings.lease_seconds)


@router.post(
    "/{name}/drain",
    response_model=WorkerOut,
    responses={**ADMIN_ONLY, **WORKER_NOT_FOUND},
    summary="Drain a worker: it gives its job back at the next step and takes no new one",
)
def drain_worker(name: str, store: StoreDep, settings: SettingsDep,
                 principal: PrincipalDep) -> WorkerOut:
    if not principal.is_admin:
        raise forbidden("only an admin may drain a worker")
    worker = None
    if len(name) <= MAX_NAME and "\x00" not in name:
        worker = store.request_worker_drain(name, settings.lease_seconds)
    if worker is None:
        raise worker_not_found(name)
    log.info("worker %s: drain requested by %s", name, principal.owner)
    return WorkerOut.from_record(worker, show_job=True)
