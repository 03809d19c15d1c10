"""The gateway's exception tree and Anthropic-shaped error bodies.

::

    GatewayError                      (500 api_error)
    ├── RequestRejected               a request refused before any upstream call
    │     (400 invalid_request_error, 401 authentication_error, 403 permission_error,
    │      404 not_found_error, 413 request_too_large, 429 rate_limit_error,
    │      503 overloaded_error while draining)
    └── UpstreamError                 the upstream failed
        ├── UpstreamConnectError      no connection (refused, DNS, TLS)
        ├── UpstreamTimeout           connect timeout, or silent longer than the idle timeout
        └── UpstreamStatusError       a non-2xx reply before the stream started (status, body kept)

Third-party errors (the upstream client's ``OSError``/``TimeoutError``, msgspec, Litestar
validation) are mapped to these at the edge, in ``proxy/upstream.py`` and ``app.py``. Before a
stream starts an error is a JSON reply with the Anthropic shape; after, it can only be an SSE
``event: error`` (see ``error_event``).
"""

from __future__ import annotations

import json
from typing import ClassVar

__all__ = (
    "GatewayError",
    "RequestRejected",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "error_body",
    "error_event",
)

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_body(error_type: str, message: str, request_id: str | None = None) -> bytes:
    """Return the JSON body Anthropic uses for errors."""
    body: dict[str, object] = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return json.dumps(body, separators=(",", ":")).encode()


def error_event(error_type: str, message: str) -> bytes:
    """Return a complete SSE ``event: error`` in Anthropic's wire format.

    ``json.dumps`` escapes CR and LF, so the message cannot break out of the ``data:`` line.
    """
    return b"event: error\ndata: " + error_body(error_type, message) + b"\n\n"


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def status(self) -> int:
        """HTTP status to answer with before a stream starts."""
        return self.status_code

    @property
    def type(self) -> str:
        """Anthropic ``error.type``."""
        return self.error_type


class RequestRejected(GatewayError):
    """A request refused before any upstream call.

    Args:
        status: HTTP status (its Anthropic error type follows from it).
        message: Human-readable reason; never echoes secrets.
        reason: Label for ``claude_gateway_rejected_total`` (``auth``, ``rate_limit``, ...).
        retry_after: Seconds a client should wait, sent as ``retry-after``.
    """

    def __init__(
        self, status: int, message: str, *, reason: str = "validation", retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self._status = status
        self.reason = reason
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        """HTTP status of the rejection."""
        return self._status

    @property
    def type(self) -> str:
        """Anthropic ``error.type`` for the status."""
        return _TYPE_BY_STATUS.get(self._status, "invalid_request_error")


class UpstreamError(GatewayError):
    """The upstream could not be used."""

    status_code = 502
    error_type = "api_error"


class UpstreamConnectError(UpstreamError):
    """No connection to the upstream could be made."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer, or went silent, for too long."""

    status_code = 504
    error_type = "timeout_error"


class UpstreamStatusError(UpstreamError):
    """The upstream replied with a non-2xx status before the stream started.

    Args:
        status: The upstream's HTTP status, relayed as is.
        body: The upstream's body, relayed as is.
        headers: Response headers to pass through (request-id, retry-after, rate limits).
    """

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(f"upstream answered {status}")
        self._status = status
        self.body = body
        self.headers = headers

    @property
    def status(self) -> int:
        """The upstream's status."""
        return self._status

    @property
    def type(self) -> str:
        """The upstream's ``error.type`` when its body has one."""
        try:
            parsed = json.loads(self.body)
            return str(parsed["error"]["type"])
        except (ValueError, KeyError, TypeError):
            return _TYPE_BY_STATUS.get(self._status, "api_error")
