"""The Redis backend of the limiter: rate and concurrency shared by every replica.

Lua scripts make each check-and-write atomic and take time from Redis (``TIME``), so clock skew
between replicas does not matter. Concurrency leases live in sorted sets scored by expiry; a
heartbeat per process pushes its live leases out, so a crashed replica's slots free themselves
within ``lease_ttl``. The concurrency keys share a ``{limits}`` hash tag (one Cluster slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING

import structlog

from gateway.security.limits import ERRORS

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ("RedisLimits",)

log = structlog.get_logger(__name__)

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
            except ERRORS as exc:
                # Missed beats only shorten the leases; the next beat catches up.
                log.warning("limits.heartbeat_failed", error=repr(exc))

    async def close(self) -> None:
        """Stop the heartbeat, drop this process's leases and close an owned client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(*ERRORS):
            for lease_id, (key_id, per_key) in list(self._live.items()):
                await self.release(key_id, lease_id, per_key)
        if self._owns:
            await self._client.aclose()
