"""The FastAPI application.

`create_app()` wires one Settings, one Store (the database is the truth) and one Celery app
(the broker only carries "run job <id>") into the routers. Run it with
`uvicorn --factory api.main:create_app`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from celery import Celery
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from api.routes import ROUTERS
from db.store import Store
from trainyard.settings import Settings, get_settings
from worker.celery_app import make_celery

log = logging.getLogger(__name__)

DASHBOARD_DIR = Path(__file__).parent / "dashboard"
# Room for the multipart envelope (boundaries, headers, the small form fields) around a file.
MULTIPART_OVERHEAD = 64 * 1024


class ContentLengthLimit:
    """Refuse a request whose declared body is larger than the upload limit, before reading it.

    The dataset route still counts the bytes it receives (a client may send no Content-Length);
    this only spares the server from spooling an honest but oversized upload to disk first.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                limit = self.max_bytes - MULTIPART_OVERHEAD
                response = JSONResponse(
                    status_code=413,
                    content={
                        "detail": f"the request is larger than the upload limit of {limit} bytes"
                    },
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _printable(text: str) -> str:
    """Text that encodes as UTF-8: a lone surrogate sent as "\\ud800" becomes that escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body, {"detail": [{"type", "loc", "msg", "ctx"?}]}, without echoing input.

    The default handler also returns each error's `input`: the whole offending value, which may
    be megabytes long, nested past the recursion limit, or hold a lone surrogate that cannot be
    encoded, turning a 422 into a 500. The message names the problem without it.
    """
    errors = []
    for error in exc.errors():
        item: dict[str, Any] = {
            "type": error.get("type", "value_error"),
            "loc": [_printable(p) if isinstance(p, str) else p for p in error.get("loc", ())],
            "msg": _printable(str(error.get("msg", ""))),
        }
        if error.get("ctx"):
            item["ctx"] = {
                _printable(str(k)): v if isinstance(v, int | float | bool) else _printable(str(v))
                for k, v in error["ctx"].items()
            }
        errors.append(item)
    return JSONResponse(status_code=422, content={"detail": errors})


def create_app(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    celery_app: Celery | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    owns_store, owns_celery = store is None, celery_app is None
    store = store if store is not None else Store(settings.resolved_database_url)
    celery_app = celery_app if celery_app is not None else make_celery(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.migrate()
        log.info("API ready: database migrated, broker %s", settings.resolved_broker_url)
        try:
            yield
        finally:  # release what this app opened; a store or Celery app passed in is the caller's
            if owns_celery:
                celery_app.close()
            if owns_store:
                store.close()

    app = FastAPI(
        title="Trainyard",
        summary="Submit neural-network training jobs, follow them, compare runs.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.state.settings = settings
    app.state.store = store
    app.state.celery = celery_app
    app.add_middleware(
        ContentLengthLimit, max_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD
    )

    for router in ROUTERS:
        app.include_router(router)

    # The dashboard's page and plotly.js come from api/routes/dashboard.py (a router above).
    app.mount("/static", StaticFiles(directory=DASHBOARD_DIR / "static"), name="static")
    return app
