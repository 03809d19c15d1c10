"""Everything checked before an upstream call: auth, policy, limits.

The body's shape is checked by decoding it into ``request_shapes``' structs. Every refusal is a
``RequestRejected`` whose handler answers with Anthropic's error shape and counts
``claude_gateway_rejected_total{reason}``; nothing refused here reaches the upstream. Compiled
(``setup.py``): a stream's admission runs here, before its first byte.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.errors import RequestRejected
from gateway.security.limits import Lease

if TYPE_CHECKING:
    from litestar import Request

    from gateway.security.auth import KeyAuthenticator
    from gateway.security.limits import Limiter
    from gateway.settings import Settings

__all__ = ("Admission", "admit", "check_key", "check_policy")


class Admission:
    """A request let in: who it is, and the concurrency slot it holds (if a stream).

    Args:
        key_id: The caller's key id.
        lease: The stream's concurrency slot, if it holds one.
    """

    # A written __init__ (compiled, setup.py), not a dataclass's generated Python: one a request.
    def __init__(self, key_id: str, lease: Lease | None = None) -> None:
        self.key_id = key_id
        self.lease = lease

    async def release(self) -> None:
        """Give the slot back (idempotent)."""
        if self.lease is not None:
            await self.lease.release()


def check_key(request: Request[Any, Any, Any], auth: KeyAuthenticator) -> str:
    """Return the caller's key id, or refuse with 401."""
    result = auth.authenticate(request.scope["headers"])  # raw pairs: no Headers object built
    if not result.ok:
        message = "x-api-key header is required" if result.reason == "missing" else "invalid x-api-key"
        raise RequestRejected(401, message, reason="auth")
    return result.key_id


def check_policy(settings: Settings, model: str, max_tokens: int | None) -> None:
    """Apply the operator's model allowlist and ``max_tokens`` cap."""
    if settings.model_allowlist and model not in settings.model_allowlist:
        raise RequestRejected(400, f"model: {model!r} is not allowed by this gateway", reason="validation")
    if max_tokens is not None and settings.max_tokens_cap and max_tokens > settings.max_tokens_cap:
        raise RequestRejected(
            400,
            f"max_tokens: {max_tokens} > {settings.max_tokens_cap}, the largest this gateway allows",
            reason="validation",
        )


async def admit(limiter: Limiter, key_id: str, *, stream: bool, draining: bool = False) -> Admission:
    """Let a request in, or refuse it: 503 for a new stream while draining, 429 past a limit.

    The rate limit applies to every request, the concurrency caps to streams only.
    """
    if stream and draining:
        raise RequestRejected(
            503, "The gateway is shutting down; retry on another instance.", reason="draining"
        )
    outcome = await limiter.admit(key_id) if stream else await limiter.check_rate(key_id)
    if outcome is None:
        return Admission(key_id)
    if isinstance(outcome, Lease):
        return Admission(key_id, outcome)
    what = "rate limit" if outcome.reason == "rate_limit" else "concurrent stream limit"
    raise RequestRejected(
        429,
        f"This gateway's {what} was reached; retry after {outcome.retry_after}s.",
        reason=outcome.reason,
        retry_after=outcome.retry_after,
    )
