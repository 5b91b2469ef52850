"""GET /metrics: the service's figures in Prometheus' text format (api/services/prometheus.py).

Who may scrape: when API keys are required, an admin key, or the scrape token
TRAINYARD_METRICS_TOKEN (both sent as `Authorization: Bearer ...`), so a Prometheus server
need not hold a key that could submit jobs or read anyone's runs; a user's key gets 403.
When keys are not required (the API bound to a loopback address), it is as open as the rest
of the API: keyless requests act as the local admin. The router is public (api/routes/
__init__.py) because the scrape token is not an API key; the check is `scrape_allowed`.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response

from api.errors import answer, forbidden
from api.security import resolve_principal
from api.services.prometheus import ServiceCollector, exposition

router = APIRouter(tags=["metrics"])


def scrape_allowed(request: Request) -> None:
    """Return when the caller may read /metrics; raise 401 (no or a wrong credential) or 403
    (a key that is not an admin's)."""
    token = request.app.state.settings.metrics_token
    header = request.headers.get("authorization")
    if token is not None and header is not None:
        scheme, _, sent = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
                sent.strip().encode(), token.get_secret_value().encode()):
            return
    principal = resolve_principal(request)  # 401 without a valid key or session
    if not principal.is_admin:
        raise forbidden("GET /metrics needs an admin API key or the scrape token "
                        "(TRAINYARD_METRICS_TOKEN)")


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics (text exposition format)",
    responses={200: {"content": {"text/plain": {}, "application/openmetrics-text": {}},
                     "description": "Prometheus' text format 0.0.4, or OpenMetrics when the "
                     "Accept header prefers it (as Prometheus' does)."}}
    | answer(401, "No API key, session or scrape token, or a wrong one (keys required).")
    | answer(403, "A key that is not an admin's."),
)
def metrics(request: Request) -> Response:
    scrape_allowed(request)
    state = request.app.state
    service = getattr(state, "metrics_collector", None)
    if service is None:  # one per app: it keeps the counters' floor (see the service)
        service = state.metrics_collector = ServiceCollector(state.store, state.settings,
                                                             state.celery)
    body, content_type = exposition(service, state.request_metrics,
                                    request.headers.get("accept", ""))
    return Response(content=body, media_type=content_type)
