"""API request counts and latencies for GET /metrics, labelled by route template.

A pure ASGI middleware, the outermost of the app (api/main.py), so it sees every answer,
the 413s of the body limit and the 404s of unknown paths included. The `route` label is the
path template of the route that answered (`/jobs/{job_id}`, never `/jobs/17`), so job ids do
not multiply the series; a path that no route matches is labelled `<unmatched>`, and a
mounted app (the dashboard's /static files) by its mount, `/static/{path}`.

One API process (`trainyard api`): the counters live in this process's registry. Several
(`trainyard api --workers N`): the command sets PROMETHEUS_MULTIPROC_DIR before uvicorn starts
them (trainyard/cli.py), prometheus_client then keeps each process's values in files there,
and a scrape, whichever process answers it, sums them all (`MultiProcessCollector`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "<unmatched>"
# Any other method a client sends is counted as OTHER: clients do not choose label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# No `_created` series beside every counter and histogram: they double the exposition and
# nothing here reads them.
disable_created_metrics()
# Seconds: from a fast read of the database (a few ms) to a large upload or an export.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


# prometheus_client chose, when it was imported just above, where this process keeps its
# values: in memory, or in files in PROMETHEUS_MULTIPROC_DIR. Read the variable at the same
# moment, so that the scrape reads the values where they are kept.
_MULTIPROC_DIR = os.environ.get(MULTIPROC_ENV) or None


def multiprocess_dir() -> str | None:
    """The folder this process writes its figures to, in multiprocess mode; else None."""
    return _MULTIPROC_DIR


def multiprocess_mode() -> bool:
    return _MULTIPROC_DIR is not None


class RequestMetrics:
    """The request counter and latency histogram of one app. In multiprocess mode they
    belong to no registry: their values go to files, which the scrape reads back."""

    def __init__(self) -> None:
        self.registry = None if multiprocess_mode() else CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "trainyard_http_requests", "API requests answered, by method, route template and "
            "status code.", ("method", "route", "status"), registry=self.registry)
        self.latency = Histogram(
            "trainyard_http_request_duration_seconds", "Time to answer an API request (to "
            "the end of its body), by method and route template.", ("method", "route"),
            buckets=LATENCY_BUCKETS, registry=self.registry)


def route_template(scope: Scope, root_path: str = "") -> str:
    """The template of the route that handled the request (FastAPI leaves the route in the
    scope), the mount for a mounted app, else `<unmatched>`. `root_path`: the scope's before
    the app ran (a mount extends it)."""
    route = scope.get("route")
    path_format = getattr(route, "path_format", None)
    if path_format:
        return path_format
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", ()):
        if isinstance(candidate, Mount):
            match, _ = candidate.matches({**scope, "root_path": root_path})
            if match == Match.FULL:
                return candidate.path + "/{path}"
    return UNMATCHED


class RequestMetricsMiddleware:
    """Counts and times every HTTP request into `metrics` (see the module)."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        status = 500  # an exception before the answer started: the server answers 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = route_template(scope, root_path)
            method = scope.get("method", "GET")
            method = method if method in METHODS else "OTHER"
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


def prepare_multiprocess_dir(home: Path, port: int) -> Path:
    """Before `trainyard api --workers N` starts its processes: a folder for their figures
    (home/prometheus/<port>, or PROMETHEUS_MULTIPROC_DIR when the operator set it), emptied of
    an earlier run's files, named in the environment the processes inherit."""
    folder = Path(os.environ.get(MULTIPROC_ENV) or home / "prometheus" / str(port))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):  # prometheus_client's files only
        stale.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder
