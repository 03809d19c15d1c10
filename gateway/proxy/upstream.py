"""Requests to Anthropic (or the simulator), with retries before the first byte.

The connection work is ``HttpClient``'s (``client.py``: why not aiohttp or httpx). Bodies are
asked for uncompressed (``accept-encoding: identity``): they are relayed byte for byte.

Retries: 429, 500, 502, 503, 504, 529 and connection errors are retried *before anything was
sent to the client*, with exponential backoff that honours ``retry-after``/``retry-after-ms``,
bounded by a number of tries and a total wait (both settings). A ``retry-after`` longer than the
remaining budget is not waited out: the upstream's reply goes back to the client, which has its
own retry logic. The client's errors (``OSError``, ``TimeoutError``) are mapped to the gateway's
tree here and nowhere else.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from operator import itemgetter
from typing import TYPE_CHECKING, Final, cast

from gateway.errors import UpstreamConnectError, UpstreamStatusError, UpstreamTimeout

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from gateway.proxy.client import HttpClient
    from gateway.proxy.connection import Response
    from gateway.settings import Settings
    from gateway.telemetry.metrics import GatewayMetrics

__all__ = ("RESPONSE_HEADERS", "Upstream", "forward_headers")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})

#: Request headers passed on to the upstream (plus any ``anthropic-*``); ``x-request-id`` is the gateway's.
_FORWARD: Final = frozenset({b"content-type", b"accept", b"user-agent"})
_VERSION: Final = (b"anthropic-version", b"2023-06-01")
#: Response headers passed back to the client (plus any ``anthropic-ratelimit-*``).
RESPONSE_HEADERS = frozenset(
    {"request-id", "retry-after", "retry-after-ms", "x-should-retry", "anthropic-organization-id"}
)
_RESPONSE_RAW: Final = frozenset(name.encode() for name in RESPONSE_HEADERS)


def forward_headers(
    client: Iterable[tuple[bytes, bytes]], *, simulator: bool, request_id: str | None = None
) -> list[tuple[bytes, bytes]]:
    """Pick the client's headers the upstream should see. Client credentials never pass.

    One pass over the request's own bytes: the upstream request is written from them as they are.

    Args:
        client: The raw ASGI ``scope["headers"]`` (names lower-case, as ASGI has them).
        simulator: Whether ``x-simulator-*`` headers pass too (a local upstream only).
        request_id: The gateway's ``x-request-id`` for the upstream (the client's is not passed).
    """
    # The items are kept as they are: typed as pairs, each would be unpacked and made anew
    # (compiled, setup.py). One-prefix `startswith` is a C primitive once compiled; a tuple of
    # prefixes is a method call.
    items: Iterable[Sequence[bytes]] = client
    out: list[Sequence[bytes]] = []
    version = False
    for item in items:
        name = item[0]
        if name in _FORWARD or (simulator and name.startswith(b"x-simulator-")):
            out.append(item)
        elif name.startswith(b"anthropic-"):
            out.append(item)
            version = version or name == b"anthropic-version"
    if not version:
        out.append(_VERSION)
    if request_id is not None:
        out.append((b"x-request-id", request_id.encode("latin-1")))
    return cast("list[tuple[bytes, bytes]]", out)


def response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's headers a client must get back (``raw``: names lower-cased, as ASGI's).

    An upstream answers with the same header names, in the same order, response after
    response: which positions to keep is worked out once per list of names and remembered.
    """
    return [raw[i] for i in _kept(tuple(map(_NAME, raw)))]


_NAME = itemgetter(0)


@functools.lru_cache(maxsize=64)
def _kept(names: tuple[bytes, ...]) -> tuple[int, ...]:
    return tuple(
        i
        for i, name in enumerate(names)
        if name in _RESPONSE_RAW or name.startswith((b"anthropic-ratelimit-", b"anthropic-priority-"))
    )


def _retry_after(resp: Response) -> float | None:
    ms = resp.header(b"retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    value = resp.header(b"retry-after")
    if value:
        try:
            return max(float(value), 0.0)
        except ValueError:
            return None
    return None


class Upstream:
    """Sends requests to the upstream Messages API.

    Args:
        client: The shared HTTP client, owned by the app lifespan.
        base_url: Anthropic's base URL, or the embedded simulator's.
        api_key: The gateway's own key; sent as ``x-api-key``.
        settings: Timeouts and retry bounds.
        metrics: Where upstream statuses and retries are counted (None: telemetry off).
    """

    def __init__(
        self,
        client: HttpClient,
        base_url: str,
        api_key: str,
        settings: Settings,
        metrics: GatewayMetrics | None,
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._key = api_key.encode("latin-1")
        self._settings = settings
        self._metrics = metrics

    @property
    def base_url(self) -> str:
        """Where requests go."""
        return self._base

    async def send(
        self,
        method: str,
        path: str,
        *,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | None = None,
        query: str = "",
        trace_headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> Response:
        """Send a request, retrying what may be retried; return a 2xx response, unread.

        ``headers`` are the client's that may pass (``forward_headers``), ``trace_headers`` the
        stream span's; the gateway's key and ``accept-encoding: identity`` are added here. The caller owns the
        response and must ``close()`` it (the relay does, in ``finally``).

        Raises:
            UpstreamStatusError: A non-2xx reply that is not (or no longer) retried.
            UpstreamConnectError: No connection after the retries.
            UpstreamTimeout: The connection or the first bytes took too long.
        """
        url = f"{self._base}{path}" + (f"?{query}" if query else "")
        out = [*headers, *trace_headers, (b"x-api-key", self._key), (b"accept-encoding", b"identity")]
        deadline = time.monotonic() + self._settings.upstream_retry_max_wait
        attempt = 0
        while True:
            try:
                resp = await self._client.request(method, url, out, body)
            except (OSError, TimeoutError) as exc:
                if isinstance(exc, TimeoutError):
                    failure: Exception = UpstreamTimeout("upstream did not answer in time")
                else:
                    failure = UpstreamConnectError("could not connect to the upstream")
                wait = self._backoff(attempt, None, deadline)
                if wait is None:
                    raise failure from exc
                self._count_retry("connect_error")
            else:
                self._count_status(resp.status)
                if resp.status < 300:
                    return resp
                wait = (
                    self._backoff(attempt, _retry_after(resp), deadline)
                    if resp.status in RETRY_STATUSES
                    else None
                )
                if wait is None:
                    try:
                        payload = await resp.read()
                    except (OSError, TimeoutError):
                        payload = b""
                    finally:
                        resp.close()
                    raise UpstreamStatusError(resp.status, payload, response_headers(resp.raw_headers))
                resp.close()
                self._count_retry(str(resp.status))
            attempt += 1
            await asyncio.sleep(wait)

    def _backoff(self, attempt: int, retry_after: float | None, deadline: float) -> float | None:
        """Seconds to wait before the next try, or None when no try is left."""
        if attempt >= self._settings.upstream_max_retries:
            return None
        jitter = random.uniform(0.75, 1.0)  # noqa: S311 - jitter, not a secret
        wait = retry_after if retry_after is not None else min(0.5 * 2**attempt, 8.0) * jitter
        if time.monotonic() + wait > deadline:
            return None
        return wait

    def _count_status(self, status: int) -> None:
        if self._metrics is not None:
            self._metrics.add(self._metrics.upstream_responses, str(status))

    def _count_retry(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.upstream_retries.labels(reason).inc()
