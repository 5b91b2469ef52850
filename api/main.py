"""The FastAPI application.

`create_app()` wires one Settings, one Store (the database is the truth) and one Celery app
(the broker only carries "run job <id>") into the routers. Run it with
`trainyard api --host H` (which tells the app its address, so it knows whether keys are
required), or `uvicorn --factory api.main:create_app` with TRAINYARD_API_HOST set to the address
uvicorn binds (or TRAINYARD_REQUIRE_KEYS=1).
"""

from __future__ import annotations

from celery import Celery
from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from api.errors import AUTH_RESPONSES, add_error_handlers
from api.lifespan import make_lifespan
from api.middleware import BodySizeLimit, SecurityHeaders
from api.request_metrics import RequestMetrics, RequestMetricsMiddleware
from api.routes import PROTECTED_ROUTERS, PUBLIC_ROUTERS
from api.routes.dashboard import DASHBOARD_DIR
from api.security import current_principal
from api.services.series_cache import FinishedSeriesCache
from core.settings import Settings, get_settings
from db.store import Store
from worker.celery_app import make_celery


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

    app = FastAPI(
        title="Trainyard",
        summary="Submit neural-network training jobs, follow them, compare runs.",
        version="0.1.0",
        lifespan=make_lifespan(settings, store, celery_app,
                               owns_store=owns_store, owns_celery=owns_celery),
        # The schema and its page are served by api/routes/docs.py, behind authentication.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    add_error_handlers(app)
    app.state.settings = settings
    app.state.store = store
    app.state.celery = celery_app
    app.state.series_cache = FinishedSeriesCache(settings.compare_cache_bytes)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        max_predict_bytes=settings.max_predict_bytes,
    )
    app.add_middleware(SecurityHeaders)
    # Outermost: every answer is counted by route template (GET /metrics).
    app.state.request_metrics = RequestMetrics()
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.request_metrics)

    authenticated = [Depends(current_principal)]
    for router in PROTECTED_ROUTERS:
        app.include_router(router, dependencies=authenticated, responses=AUTH_RESPONSES)
    for router in PUBLIC_ROUTERS:
        app.include_router(router)
    # The dashboard's page and plotly.js come from api/routes/dashboard.py (a router above).
    app.mount("/static", StaticFiles(directory=DASHBOARD_DIR / "static"), name="static")
    return app
