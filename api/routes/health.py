"""/healthz: is the service up, can it reach its database and write to its disk, and does every
queue with jobs have a live worker?

200 with `status: ok`, or `status: degraded` and the `problems` in words (the API answers, but
jobs will wait or writes will fail); 503 with `status: error` when the database cannot be
reached. Public, like any load balancer's probe: it shows counts, never names or ids.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import SettingsDep, StoreDep
from api.schemas import Health, QueueHealth
from core.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

# A 507 answered this recently still counts when the disk cannot be measured from here
# (the database is on another machine).
STORAGE_ERROR_MEMORY_SECONDS = 30.0


def _local_storage_paths(settings: Settings, database_path: str | None) -> list[Path]:
    """Folders on this machine the service writes to: the state folder, the SQLite file's."""
    paths = [settings.home]
    if database_path:
        paths.append(Path(database_path).parent)
    return [p for p in paths if p.exists()]


def storage_state(request: Request, settings: Settings, database_path: str | None) -> str:
    """"ok", or "full": a local disk below `min_free_bytes`, or (when the database's disk is not
    local) a storage-full error answered in the last seconds."""
    paths = _local_storage_paths(settings, database_path)
    if any(shutil.disk_usage(p).free < settings.min_free_bytes for p in paths):
        return "full"
    if database_path is None:  # the database's disk is elsewhere: trust its recent errors
        last = request.app.state.storage_full_at
        if last is not None and time.monotonic() - last < STORAGE_ERROR_MEMORY_SECONDS:
            return "full"
    return "ok"


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database cannot be reached."}},
    summary="Liveness, database, storage and workers",
)
def healthz(request: Request, store: StoreDep, settings: SettingsDep) -> Health | JSONResponse:
    if not store.ping():  # ping reports failures as False, it never raises
        log.warning("health check: the database does not answer")
        down = Health(status="error", database="unavailable", storage="unknown", queues={},
                      problems=["the database cannot be reached"])
        return JSONResponse(status_code=503, content=down.model_dump())
    problems = []
    database_path = store.url.database if store.dialect == "sqlite" else None
    storage = storage_state(request, settings, database_path)
    if storage != "ok":
        problems.append("storage is full: new jobs, uploads and metrics cannot be saved")
    queues = {name: QueueHealth(**counts)
              for name, counts in store.queue_health(settings.lease_seconds).items()}
    for name, queue in sorted(queues.items()):
        if queue.queued and not queue.workers:
            problems.append(f"{queue.queued} job(s) queued for {name!r} and no live worker "
                            "serves that queue")
    return Health(status="degraded" if problems else "ok", database="ok", storage=storage,
                  queues=queues, problems=problems)
