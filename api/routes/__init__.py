"""One router per resource; `api.main.create_app` includes them all."""

from api.routes import catalogue, compare, dashboard, datasets, health, jobs

ROUTERS = (
    jobs.router,
    compare.router,
    catalogue.router,
    datasets.router,
    health.router,
    dashboard.router,  # before the /static mount: it serves /static/vendor/plotly.min.js
)

__all__ = ["ROUTERS"]
