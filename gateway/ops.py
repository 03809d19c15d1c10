"""Operational routes: liveness, readiness, metrics, and what the frontend needs to know.

``/metrics`` speaks OpenMetrics (with exemplars carrying trace ids) when the scraper asks for
it, and the classic text format otherwise. ``/v1/gateway/traces`` serves the in-memory trace
view behind the frontend's waterfall.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.response.base import ASGIResponse
from prometheus_client import exposition
from prometheus_client.openmetrics import exposition as openmetrics

from gateway.proxy.routes import authenticate
from gateway.state import state_of
from gateway.telemetry.metrics import metrics_registry_for_scrape

__all__ = ("ops_routes",)


@get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/readyz", include_in_schema=False)
async def readyz(request: Request[Any, Any, Any]) -> ASGIResponse:
    """Readiness: 503 while draining, so load balancers stop sending new streams."""
    state = state_of(request)
    if state.hub.draining:
        return ASGIResponse(body=b'{"status":"draining"}', status_code=503, media_type="application/json")
    return ASGIResponse(body=b'{"status":"ready"}', status_code=200, media_type="application/json")


@get("/metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> ASGIResponse:
    """Prometheus exposition of this process (or all workers, in multiprocess mode)."""
    state = state_of(request)
    state.telemetry.flush()  # streams that ended in the last moments count in this scrape
    registry = metrics_registry_for_scrape(state.registry)
    accept = request.headers.get("accept", "")
    if "application/openmetrics-text" in accept:
        body = openmetrics.generate_latest(registry)  # type: ignore[no-untyped-call]
        ctype = openmetrics.CONTENT_TYPE_LATEST
    else:
        body, ctype = exposition.generate_latest(registry), exposition.CONTENT_TYPE_LATEST
    return ASGIResponse(body=body, status_code=200, media_type=ctype)


@get("/v1/gateway/info", summary="Gateway facts for frontends")
async def info(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Version, whether the upstream is the simulator, and the models it can price."""
    state = state_of(request)
    models = sorted(state.telemetry.prices.known_models)
    return {
        "version": state.version,
        "simulated": state.settings.simulated,
        "models": models,
        "default_model": state.agent.default_model,
        "auth_required": state.auth.enabled,
    }


@get("/v1/gateway/traces", before_request=authenticate, summary="Recent traces for the local waterfall")
async def traces(request: Request[Any, Any, Any], limit: int = 10) -> dict[str, Any]:
    """The last ``limit`` streams' spans, newest first (empty when the view is off)."""
    state = state_of(request)
    if state.recent is None:
        return {"traces": []}
    state.telemetry.flush()
    return {"traces": state.recent.snapshot(max(1, min(limit, 100)))}


ops_routes = [healthz, readyz, metrics, info, traces]
