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
import contextlib
import itertools
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

__all__ = ("Lease", "Limiter", "MemoryLimits", "RedisLimits", "Rejection", "create_limiter")

log = structlog.get_logger(__name__)

_BACKOFF = 2.0
_ERRORS = (RedisError, OSError, asyncio.TimeoutError)

# KEYS[1] global set, KEYS[2] per-key set (absent without a per-key cap).
# ARGV: lease id, ttl ms, global cap, per-key cap. Returns "" or the full scope.
_ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 'global' end
if #KEYS > 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 'key' end
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return ''
"""
# KEYS[1] global set, KEYS[i] the per-key set of lease ARGV[i] (i >= 2); ARGV[1] ttl ms.
_REFRESH = """
local t = redis.call('TIME')
local ttl = tonumber(ARGV[1])
local exp = t[1] * 1000 + math.floor(t[2] / 1000) + ttl
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', exp, ARGV[i])
  if KEYS[i] and KEYS[i] ~= KEYS[1] then
    redis.call('ZADD', KEYS[i], 'XX', exp, ARGV[i])
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
redis.call('PEXPIRE', KEYS[1], ttl)
return 0
"""
# KEYS: the sets holding ARGV[1].
_RELEASE = """
for i = 1, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 0
"""
# KEYS[1] the key's request log; ARGV: limit, window ms, unique member. Returns ms to wait.
_RATE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""


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


class RedisLimits:
    """Limits shared by replicas through Redis (see the module docstring).

    Args:
        client: The Redis client (not closed here unless ``owns_client``).
        prefix: Key prefix, so several gateways (or tests) share one Redis.
        lease_ttl: Seconds a lease lives without a heartbeat.
        heartbeat: Seconds between re-scores of live leases; None turns it off.
        owns_client: Close ``client`` in :meth:`close`.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "claude_gateway:",
        lease_ttl: float = 120.0,
        heartbeat: float | None = 30.0,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._global = f"{prefix}{{limits}}:streams"
        self._key_prefix = f"{prefix}{{limits}}:streams:"
        self._rate_prefix = f"{prefix}rate:"
        self._ttl_ms = int(lease_ttl * 1000)
        self._heartbeat = heartbeat
        self._owns = owns_client
        self._acquire = client.register_script(_ACQUIRE)
        self._refresh = client.register_script(_REFRESH)
        self._rate = client.register_script(_RATE)
        self._release = client.register_script(_RELEASE)
        self._live: dict[str, tuple[str, bool]] = {}  # lease id -> (key id, per-key set used)
        self._task: asyncio.Task[None] | None = None

    async def hit(self, key_id: str, limit: int, window: float) -> float:
        """Record a request; return 0.0, or the seconds until one would be allowed."""
        member = os.urandom(8).hex()
        wait_ms = await self._rate(
            keys=[self._rate_prefix + key_id], args=[limit, int(window * 1000), member]
        )
        return int(wait_ms) / 1000

    async def acquire(self, key_id: str, lease_id: str, total: int, per_key: int) -> str:
        """Take a slot; return "" or the scope that is full."""
        keys = [self._global]
        if per_key:
            keys.append(self._key_prefix + key_id)
        full = await self._acquire(keys=keys, args=[lease_id, self._ttl_ms, total, per_key])
        if full:
            return full.decode() if isinstance(full, bytes) else str(full)
        self._live[lease_id] = (key_id, bool(per_key))
        if self._heartbeat and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._beat(self._heartbeat))
        return ""

    async def release(self, key_id: str, lease_id: str, per_key: bool) -> None:
        """Give a slot back (one round trip)."""
        self._live.pop(lease_id, None)
        keys = [self._global, self._key_prefix + key_id] if per_key else [self._global]
        await self._release(keys=keys, args=[lease_id])

    async def refresh(self) -> None:
        """Push the expiry of every live lease of this process out by ``lease_ttl``."""
        if not self._live:
            return
        ids = list(self._live)
        keys = [self._global]
        for key_id, per_key in self._live.values():
            keys.append(self._key_prefix + key_id if per_key else self._global)
        await self._refresh(keys=keys, args=[self._ttl_ms, *ids])

    async def _beat(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.refresh()
            except _ERRORS as exc:
                # Missed beats only shorten the leases; the next beat catches up.
                log.warning("limits.heartbeat_failed", error=repr(exc))

    async def close(self) -> None:
        """Stop the heartbeat, drop this process's leases and close an owned client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(*_ERRORS):
            for lease_id, (key_id, per_key) in list(self._live.items()):
                await self.release(key_id, lease_id, per_key)
        if self._owns:
            await self._client.aclose()


class Limiter:
    """Rate, then concurrency, over one backend; fails open when the backend errs.

    Args:
        backend: :class:`MemoryLimits` or :class:`RedisLimits`.
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
        self._ids = (f"{os.urandom(6).hex()}:{n}" for n in itertools.count())
        self._active: dict[str, int] = {}
        self._skip_until = 0.0

    async def check_rate(self, key_id: str) -> Rejection | None:
        """Count one request against ``key_id``'s rate; a Rejection when over it."""
        if not self._rate or self._skipping():
            return None
        try:
            wait = await self._backend.hit(key_id, self._rate, self._window)
        except _ERRORS as exc:
            self._failed(exc)
            return None
        if wait <= 0:
            return None
        return Rejection("rate_limit", max(1, math.ceil(wait)))

    async def acquire(self, key_id: str) -> Lease | Rejection:
        """Take a concurrent-stream slot for ``key_id``."""
        lease_id = next(self._ids)
        if self._skipping():
            return self._lease(key_id, lease_id, held=False)
        try:
            full = await self._backend.acquire(key_id, lease_id, self._total, self._per_key)
        except _ERRORS as exc:
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
                except _ERRORS as exc:  # the lease lapses by itself after its TTL
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
