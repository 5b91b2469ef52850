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
    sweeps,
    workers,
)

# Behind an API key or dashboard session (api/security.py).
PROTECTED_ROUTERS = (
    jobs.router,
    inference.router,
    export.router,
    inspect.router,
    confusion.router,
    sweeps.router,
    compare.router,
    catalogue.router,
    datasets.router,
    workers.router,
    docs.router,  # /openapi.json and /docs: not in the schema they serve
)
# /healthz for load balancers, the dashboard's static shell (it holds no data, and shows the
# sign-in form), and /auth, whose routes check credentials themselves.
PUBLIC_ROUTERS = (
    health.router,
    auth.router,
    dashboard.router,  # before the /static mount: it serves /static/vendor/plotly.min.js
)

__all__ = ["PROTECTED_ROUTERS", "PUBLIC_ROUTERS"]
