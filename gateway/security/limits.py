"""Admission control: per-key request rate, then global and per-key concurrent streams.

``Limiter.admit(key_id)`` is called once per request and returns a :class:`Lease` (release it
when the stream ends) or a :class:`Rejection` (``rate_limit`` or ``concurrency``, with
``retry_after`` seconds for the ``retry-after`` header).

Two backends share the same semantics:

* **Memory** (default): per process. With several uvicorn workers each gets its own caps.
* **Redis** (``GATEWAY_REDIS_URL``): replicas share the caps. Concurrency is a sorted set per
  scope whose members are lease ids scored by expiry; a Lua script drops expired members and
  checks-and-adds atomically, and a heartbeat re-scores this process's live leases, so the
  leases of a crashed replica lapse within ``lease_ttl``. The rate is a sliding log (a sorted
  set of request times per key, also one Lua script). Times come from the Redis server's
  ``TIME`` so replicas never disagree through clock skew. Concurrency keys share the
  ``{limits}`` hash tag so the multi-key scripts also run on Redis Cluster.

Redis unreachable: limits **fail open**. Availability of the paid upstream matters more than
exact caps for the seconds Redis is away; every failure calls ``on_error`` (the lead counts
it), a warning is logged once per outage, and Redis is skipped for ``_BACKOFF`` seconds so a
dead server does not add its timeout to every request.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import structlog
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from redis.asyncio import Redis

    from gateway.settings import Settings

__all__ = ("ERRORS", "Lease", "Limiter", "MemoryLimits", "Rejection", "create_limiter")

log = structlog.get_logger(__name__)

_BACKOFF = 2.0
ERRORS = (RedisError, OSError, asyncio.TimeoutError)
"""What a Redis backend may raise; the limiter fails open on these."""

@dataclass(frozen=True, slots=True)
class Rejection:
    """A request refused by a limit."""

    reason: Literal["rate_limit", "concurrency"]
    """The ``claude_gateway_rejected_total`` reason."""
    retry_after: int
    """Whole seconds (>= 1) before a retry may succeed."""
    scope: Literal["key", "global"] = "key"
    """Which cap refused: the client's own, or the gateway's."""


class Lease:
    """One admitted stream's slot; :meth:`release` it when the stream ends (idempotent)."""

    __slots__ = ("_on_release", "_released", "key_id", "lease_id")

    def __init__(
        self, key_id: str, lease_id: str, on_release: Callable[[Lease], Awaitable[None]] | None
    ) -> None:
        self.key_id = key_id
        self.lease_id = lease_id
        self._on_release = on_release
        self._released = False

    @property
    def released(self) -> bool:
        """True once :meth:`release` ran."""
        return self._released

    async def release(self) -> None:
        """Give the slot back; later calls do nothing."""
        if self._released:
            return
        self._released = True
        if self._on_release is not None:
            await self._on_release(self)

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.release()


class _Backend(Protocol):
    async def hit(self, key_id: str, limit: int, window: float) -> float: ...
    async def acquire(self, key_id: str, lease_id: str, total: int, per_key: int) -> str: ...
    async def release(self, key_id: str, lease_id: str, per_key: bool) -> None: ...
    async def close(self) -> None: ...


class MemoryLimits:
    """Per-process limits: a sliding log per key and lease-id sets."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._sweep_at = 4096
        self._all: set[str] = set()
        self._by_key: dict[str, set[str]] = {}

    async def hit(self, key_id: str, limit: int, window: float) -> float:
        """Record a request; return 0.0, or the seconds until one would be allowed."""
        now = self._clock()
        log_ = self._hits.setdefault(key_id, deque())
        while log_ and log_[0] <= now - window:
            log_.popleft()
        if len(log_) >= limit:
            return log_[0] + window - now
        log_.append(now)
        if len(self._hits) > self._sweep_at:  # idle keys would otherwise pile up forever
            self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - window}
            self._sweep_at = max(4096, 2 * len(self._hits))
        return 0.0

    async def acquire(self, key_id: str, lease_id: str, total: int, per_key: int) -> str:
        """Take a slot; return "" or the scope that is full."""
        if len(self._all) >= total:
            return "global"
        held = self._by_key.setdefault(key_id, set())
        if per_key and len(held) >= per_key:
            return "key"
        held.add(lease_id)
        self._all.add(lease_id)
        return ""

    async def release(self, key_id: str, lease_id: str, per_key: bool) -> None:
        """Give a slot back."""
        self._all.discard(lease_id)
        held = self._by_key.get(key_id)
        if held is not None:
            held.discard(lease_id)
            if not held:
                del self._by_key[key_id]

    async def close(self) -> None:
        """Nothing to close."""


class Limiter:
    """Rate, then concurrency, over one backend; fails open when the backend errs.

    Args:
        backend: :class:`MemoryLimits` or ``limits_redis.RedisLimits``.
        max_streams: Concurrent streams across the gateway.
        max_streams_per_key: Concurrent streams per key id (0: no per-key cap).
        rate_limit_per_minute: Requests per key id per ``window`` (0: unlimited).
        window: Seconds of the rate window (60; tests shorten it).
        on_error: Called with each backend error (admission then fails open).
    """

    def __init__(
        self,
        backend: _Backend,
        *,
        max_streams: int,
        max_streams_per_key: int = 0,
        rate_limit_per_minute: int = 0,
        window: float = 60.0,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self._backend = backend
        self._total = max_streams
        self._per_key = max_streams_per_key
        self._rate = rate_limit_per_minute
        self._window = window
        self._on_error = on_error
        # Unique across replicas sharing Redis: a random prefix drawn once, then a counter
        # (not a random draw, a system call, per stream). A plain attribute: compiled
        # (setup.py), a generator expression over itertools.count() never returned.
        self._prefix = os.urandom(6).hex()
        self._issued = 0
        self._active: dict[str, int] = {}
        self._skip_until = 0.0

    async def check_rate(self, key_id: str) -> Rejection | None:
        """Count one request against ``key_id``'s rate; a Rejection when over it."""
        if not self._rate or self._skipping():
            return None
        try:
            wait = await self._backend.hit(key_id, self._rate, self._window)
        except ERRORS as exc:
            self._failed(exc)
            return None
        if wait <= 0:
            return None
        return Rejection("rate_limit", max(1, math.ceil(wait)))

    async def acquire(self, key_id: str) -> Lease | Rejection:
        """Take a concurrent-stream slot for ``key_id``."""
        lease_id = f"{self._prefix}:{self._issued}"
        self._issued += 1
        if self._skipping():
            return self._lease(key_id, lease_id, held=False)
        try:
            full = await self._backend.acquire(key_id, lease_id, self._total, self._per_key)
        except ERRORS as exc:
            self._failed(exc)
            return self._lease(key_id, lease_id, held=False)
        if full:
            # Streams last seconds to minutes; one second is an honest "try again soon".
            return Rejection("concurrency", 1, "global" if full == "global" else "key")
        return self._lease(key_id, lease_id, held=True)

    async def admit(self, key_id: str) -> Lease | Rejection:
        """Check the rate, then take a concurrency slot. Release the Lease when done."""
        return await self.check_rate(key_id) or await self.acquire(key_id)

    def active(self, key_id: str | None = None) -> int:
        """Leases this process holds now, in all or for one key id."""
        if key_id is None:
            return sum(self._active.values())
        return self._active.get(key_id, 0)

    async def close(self) -> None:
        """Close the backend."""
        await self._backend.close()

    def _lease(self, key_id: str, lease_id: str, *, held: bool) -> Lease:
        self._active[key_id] = self._active.get(key_id, 0) + 1

        async def on_release(lease: Lease) -> None:
            left = self._active.get(key_id, 1) - 1
            if left:
                self._active[key_id] = left
            else:
                self._active.pop(key_id, None)
            if held:
                try:
                    await self._backend.release(key_id, lease.lease_id, bool(self._per_key))
                except ERRORS as exc:  # the lease lapses by itself after its TTL
                    self._failed(exc)

        return Lease(key_id, lease_id, on_release)

    def _skipping(self) -> bool:
        return self._skip_until > 0 and time.monotonic() < self._skip_until

    def _failed(self, exc: Exception) -> None:
        if not self._skipping():
            log.warning("limits.backend_unavailable", error=repr(exc), fail="open")
        self._skip_until = time.monotonic() + _BACKOFF
        if self._on_error is not None:
            self._on_error(exc)


def create_limiter(
    settings: Settings,
    *,
    client: Redis | None = None,
    prefix: str = "claude_gateway:",
    on_error: Callable[[Exception], None] | None = None,
) -> Limiter:
    """Build the limiter the settings ask for: Redis when ``redis_url`` is set, else memory.

    Args:
        settings: ``max_streams``, ``max_streams_per_key``, ``rate_limit_per_minute`` and
            ``redis_url`` are read.
        client: A Redis client to use instead of one built from ``redis_url`` (not closed).
        prefix: Redis key prefix.
        on_error: Called with each Redis error (the limiter then fails open).
    """
    backend: _Backend
    if client is not None or settings.redis_url:
        from gateway.security.limits_redis import RedisLimits  # noqa: PLC0415 - after ERRORS exists

        if client is None:
            from redis.asyncio import Redis  # noqa: PLC0415 - only deployments with Redis pay

            # Short timeouts: a slow Redis must not hold up admission for long (fail open).
            client = Redis.from_url(
                settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
            )
            backend = RedisLimits(client, prefix=prefix, owns_client=True)
        else:
            backend = RedisLimits(client, prefix=prefix)
    else:
        backend = MemoryLimits()
    return Limiter(
        backend,
        max_streams=settings.max_streams,
        max_streams_per_key=settings.max_streams_per_key,
        rate_limit_per_minute=settings.rate_limit_per_minute,
        on_error=on_error,
    )
