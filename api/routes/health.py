"""/healthz: is the service up and can it reach its database?"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import StoreDep
from api.schemas import Health

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database cannot be reached."}},
    summary="Liveness and database check",
)
def healthz(store: StoreDep) -> Health | JSONResponse:
    if not store.ping():  # ping reports failures as False, it never raises
        log.warning("health check: the database does not answer")
        return JSONResponse(status_code=503, content={"status": "error", "database": "unavailable"})
    return Health(status="ok", database="ok")
