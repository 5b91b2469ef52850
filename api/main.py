"""The FastAPI application.

`create_app()` wires one Settings, one Store (the database is the truth) and one Celery app
(the broker only carries "run job <id>") into the routers. Run it with
`trainyard api --host H` (which tells the app its address, so it knows whether keys are
required), or `uvicorn --factory api.main:create_app` with TRAINYARD_API_HOST set to the address
uvicorn binds (or TRAINYARD_REQUIRE_KEYS=1).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from celery import Celery
from fastapi import Depends, FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import current_principal, keys_required, prepare_auth
from api.errors import unhandled_error_handler, validation_error_handler
from api.routes import PROTECTED_ROUTERS, PUBLIC_ROUTERS
from api.schemas import ErrorOut
from db.store import Store
from core.settings import Settings, get_settings
from worker.celery_app import enqueue_job, make_celery
from worker.reconciler import Reconciler

log = logging.getLogger(__name__)

DASHBOARD_DIR = Path(__file__).parent / "dashboard"
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No API key or session, or a wrong or revoked one."},
    403: {"model": ErrorOut, "description": "A session request that changes state without "
          "its X-CSRF-Token."},
    413: {"model": ErrorOut, "description": "The body is larger than the request size limit."},
}
# Room for the multipart envelope (boundaries, headers, the small form fields) around a file.
MULTIPART_OVERHEAD = 64 * 1024


class BodySizeLimit:
    """Cap every request body: dataset uploads at the upload limit, anything else at
    TRAINYARD_MAX_REQUEST_BYTES (a job spec is a few hundred bytes).

    A declared Content-Length over the cap is refused before a byte is read; a body sent without
    one (chunked) is counted as it arrives and refused with 413 as soon as it passes the cap, so
    no request can make the server buffer more than the cap.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and scope["path"].rstrip("/") == "/datasets"
        cap = self.max_upload_bytes + MULTIPART_OVERHEAD if upload else self.max_bytes
        shown = self.max_upload_bytes if upload else self.max_bytes
        what = "upload limit" if upload else "request size limit"
        detail = f"the request is larger than the {what} of {shown} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            await JSONResponse(status_code=413, content={"detail": detail})(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    # Propagates out of the body parser as this 413 (FastAPI re-raises
                    # HTTPExceptions met while reading a body).
                    raise HTTPException(status_code=413, detail=detail)
            return message

        await self.app(scope, counted_receive, send)


# The dashboard loads only its own files: no inline script, no other origin. Inline styles are
# allowed because plotly.js sets chart styles at run time; frame-ancestors forbids framing.
DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# FastAPI's /docs page is Swagger UI from a CDN started by one inline script.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: "
    "https://fastapi.tiangolo.com; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class SecurityHeaders:
    """Headers on every response: a Content-Security-Policy, no MIME sniffing, no framing, no
    referrer, and no caching of API answers (they hold users' data)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope["path"] == "/docs" else DASHBOARD_CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = csp
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "no-referrer"
                if "cache-control" not in headers and headers.get("content-type", "").startswith(
                    "application/json"
                ):
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def redacted_url(url: str) -> str:
    """A URL fit for a log line: its password, if any, replaced by ***."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy-style URL: keep only scheme and host
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}" if rest else "<url>"


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
        auth_line = prepare_auth(settings, store)  # raises (no start) when open to the network
        if keys_required(settings):
            log.info(auth_line)
        else:
            log.warning(auth_line)
        log.info("API ready: database migrated, broker %s", redacted_url(settings.resolved_broker_url))
        # Recovery must not hang on one worker being alive: the API reconciles too.
        reconciler = Reconciler(
            store, lambda job_id, device: enqueue_job(celery_app, job_id, device), settings
        ).start() if settings.reconcile_in_api else None
        try:
            yield
        finally:  # release what this app opened; a store or Celery app passed in is the caller's
            if reconciler is not None:
                reconciler.stop()
            if owns_celery:
                celery_app.close()
            if owns_store:
                store.close()

    app = FastAPI(
        title="Trainyard",
        summary="Submit neural-network training jobs, follow them, compare runs.",
        version="0.1.0",
        lifespan=lifespan,
        # The schema and its page are served below, behind authentication like the API.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)
    app.state.storage_full_at = None  # monotonic time of the last 507 (api/errors.py)
    app.state.settings = settings
    app.state.store = store
    app.state.celery = celery_app
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    app.add_middleware(SecurityHeaders)

    authenticated = [Depends(current_principal)]
    for router in PROTECTED_ROUTERS:
        app.include_router(router, dependencies=authenticated, responses=AUTH_RESPONSES)
    for router in PUBLIC_ROUTERS:
        app.include_router(router)

    @app.get("/openapi.json", include_in_schema=False, dependencies=authenticated)
    def openapi_schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=authenticated)
    def docs_page() -> Any:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Trainyard API")

    # The dashboard's page and plotly.js come from api/routes/dashboard.py (a router above).
    app.mount("/static", StaticFiles(directory=DASHBOARD_DIR / "static"), name="static")
    return app
