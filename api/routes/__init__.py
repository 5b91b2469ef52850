"""One router per resource; `api.main.create_app` includes them all."""

from api.routes import (
    auth,
    catalogue,
    compare,
    confusion,
    dashboard,
    datasets,
    docs,
    export,
    health,
    inference,
    inspect,
    jobs,
    lifecycle,
    logs,
    metrics,
    sweeps,
    webhooks,
    workers,
)

# Behind an API key or dashboard session (api/security.py).
PROTECTED_ROUTERS = (
    jobs.router,
    logs.router,  # GET /jobs/{id}/logs
    inference.router,
    export.router,
    inspect.router,
    confusion.router,
    sweeps.router,
    compare.router,
    catalogue.router,
    datasets.router,
    workers.router,
    webhooks.router,
    lifecycle.router,  # DELETE /jobs/{id}, POST /jobs/delete, GET /usage
    docs.router,  # /openapi.json and /docs: not in the schema they serve
)
# /healthz for load balancers, the dashboard's static shell (it holds no data, and shows the
# sign-in form), and /auth, whose routes check credentials themselves.
PUBLIC_ROUTERS = (
    health.router,
    # GET /metrics checks itself: an admin key or the scrape token, which is not an API key
    metrics.router,
    auth.router,
    dashboard.router,  # before the /static mount: it serves /static/vendor/plotly.min.js
)

__all__ = ["PROTECTED_ROUTERS", "PUBLIC_ROUTERS"]
