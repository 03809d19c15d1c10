"""Exception handlers: every error before a stream starts gets Anthropic's JSON error shape.

Litestar's own errors (validation of the body, 404, 405, 413 from the body-size limit) are
mapped here too, so a client of the official SDK always gets the type it knows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Response
from litestar.exceptions import HTTPException, ValidationException

from gateway.errors import GatewayError, RequestRejected, UpstreamStatusError, error_body
from gateway.telemetry.logs import get_logger
from gateway.telemetry.metrics import ROUTE_AGENT, ROUTE_MESSAGES

if TYPE_CHECKING:
    from litestar import Request

    from gateway.state import GatewayState

__all__ = ("exception_handlers",)

log = get_logger("gateway.errors")

_OUTCOME_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "unauthorized",
    404: "bad_request",
    413: "bad_request",
    429: "rate_limited",
    503: "overloaded",
}


def _route(request: Request[Any, Any, Any]) -> str | None:
    path = request.url.path
    if path == ROUTE_MESSAGES:
        return ROUTE_MESSAGES
    if path.startswith(ROUTE_AGENT):
        return ROUTE_AGENT
    return None


def _state(request: Request[Any, Any, Any]) -> GatewayState | None:
    return getattr(request.app.state, "gateway", None)


def _count_rejection(request: Request[Any, Any, Any], status: int, reason: str | None) -> None:
    state = _state(request)
    metrics = state.telemetry.metrics if state is not None else None
    if metrics is None:
        return
    if reason in {"auth", "rate_limit", "concurrency", "body_size", "validation"}:
        metrics.rejected.labels(reason).inc()
    route = _route(request)
    if route is not None:
        metrics.requests.labels(route, _OUTCOME_BY_STATUS.get(status, "bad_request")).inc()


def _reply(status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> Response[bytes]:
    return Response(
        content=body,
        status_code=status,
        media_type="application/json",
        headers={k.decode("latin-1"): v.decode("latin-1") for k, v in headers or []},
    )


def _request_id(request: Request[Any, Any, Any]) -> str | None:
    rid = request.scope.get("state", {}).get("request_id")
    return str(rid) if rid else None


def on_gateway_error(request: Request[Any, Any, Any], exc: GatewayError) -> Response[bytes]:
    """Reply with the error's status and Anthropic body (the upstream's own, when it has one)."""
    if isinstance(exc, UpstreamStatusError):
        return _reply(exc.status, exc.body, exc.headers)
    headers: list[tuple[bytes, bytes]] = []
    if isinstance(exc, RequestRejected):
        _count_rejection(request, exc.status, exc.reason)
        if exc.retry_after is not None:
            headers.append((b"retry-after", str(exc.retry_after).encode()))
        if exc.status == 503:
            headers.append((b"x-should-retry", b"true"))
    return _reply(exc.status, error_body(exc.type, exc.message, _request_id(request)), headers)


def on_validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    """A body that is not valid JSON or misses a required field: 400 before any upstream call."""
    detail = exc.detail
    extra = exc.extra
    if isinstance(extra, list) and extra:
        first = extra[0]
        if isinstance(first, dict) and first.get("message"):
            key = first.get("key")
            detail = f"{key}: {first['message']}" if key else str(first["message"])
    _count_rejection(request, 400, "validation")
    return _reply(400, error_body("invalid_request_error", str(detail), _request_id(request)))


def on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's HTTP errors (404, 405, 413...) in Anthropic's shape."""
    status = exc.status_code
    kinds = {
        404: "not_found_error",
        405: "invalid_request_error",
        413: "request_too_large",
        401: "authentication_error",
        403: "permission_error",
        429: "rate_limit_error",
    }
    if status == 413:
        _count_rejection(request, 413, "body_size")
        message = "Request body is larger than this gateway accepts."
    elif status == 400:  # a body that is not JSON at all
        _count_rejection(request, 400, "validation")
        message = str(exc.detail)
    else:
        message = str(exc.detail)
    error_type = kinds.get(status, "invalid_request_error" if status < 500 else "api_error")
    return _reply(status, error_body(error_type, message, _request_id(request)))


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Anything else is the gateway's fault: 500 api_error, logged without request content."""
    log.error("request.failed", error=type(exc).__name__, path=request.url.path, exc_info=exc)
    return _reply(500, error_body("api_error", "Internal gateway error.", _request_id(request)))


exception_handlers: dict[Any, Any] = {
    GatewayError: on_gateway_error,
    ValidationException: on_validation_error,
    HTTPException: on_http_error,
    Exception: on_unexpected,
}
