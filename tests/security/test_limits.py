"""Admission control: rate and concurrency, in memory and shared through a real Redis."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from gateway.security.limits import (
    Lease,
    Limiter,
    MemoryLimits,
    Rejection,
    create_limiter,
)
from gateway.security.limits_redis import RedisLimits
from gateway.settings import Settings
from tests.support.clock import Clock


def prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


# --- memory ---------------------------------------------------------------------------------


async def test_memory_global_and_per_key_caps() -> None:
    limiter = Limiter(MemoryLimits(), max_streams=3, max_streams_per_key=2)
    a1, a2 = await limiter.admit("a"), await limiter.admit("a")
    assert isinstance(a1, Lease)
    assert isinstance(a2, Lease)
    assert await limiter.admit("a") == Rejection("concurrency", 1, "key")
    b1 = await limiter.admit("b")
    assert isinstance(b1, Lease)
    assert await limiter.admit("c") == Rejection("concurrency", 1, "global")
    assert limiter.active() == 3
    assert limiter.active("a") == 2
    await a1.release()
    assert isinstance(await limiter.admit("c"), Lease)


async def test_release_is_idempotent() -> None:
    limiter = Limiter(MemoryLimits(), max_streams=1)
    lease = await limiter.admit("a")
    assert isinstance(lease, Lease)
    await lease.release()
    await lease.release()
    assert lease.released
    assert limiter.active() == 0
    second = await limiter.admit("a")
    assert isinstance(second, Lease)
    # A double release of the old lease must not free the new lease's slot.
    await lease.release()
    assert isinstance(await limiter.admit("b"), Rejection)


async def test_lease_ids_are_a_replica_prefix_and_a_counter() -> None:
    ids = []
    for limiter in (Limiter(MemoryLimits(), max_streams=9), Limiter(MemoryLimits(), max_streams=9)):
        leases = [await limiter.admit(key) for key in ("a", "a", "b")]
        ids.append([lease.lease_id for lease in leases if isinstance(lease, Lease)])
    # Unique within a replica by the counter, across replicas by the prefix.
    for replica in ids:
        prefixes = {lease_id.split(":")[0] for lease_id in replica}
        assert len(prefixes) == 1, replica
        assert [lease_id.split(":")[1] for lease_id in replica] == ["0", "1", "2"]
    assert ids[0][0].split(":")[0] != ids[1][0].split(":")[0]


async def test_lease_as_context_manager() -> None:
    limiter = Limiter(MemoryLimits(), max_streams=1)
    lease = await limiter.admit("a")
    assert isinstance(lease, Lease)
    async with lease:
        assert limiter.active() == 1
    assert limiter.active() == 0


async def test_memory_rate_sliding_window_retry_after() -> None:
    clock = Clock()
    limiter = Limiter(MemoryLimits(clock), max_streams=100, rate_limit_per_minute=2)
    for _ in range(2):
        lease = await limiter.admit("a")
        assert isinstance(lease, Lease)
        await lease.release()
        clock.now += 10
    assert await limiter.admit("a") == Rejection("rate_limit", 40)
    assert isinstance(await limiter.admit("b"), Lease)  # per key
    clock.now += 39.5
    assert await limiter.admit("a") == Rejection("rate_limit", 1)  # ceil, never 0
    clock.now += 0.6
    assert isinstance(await limiter.admit("a"), Lease)


async def test_memory_rate_sweeps_idle_keys() -> None:
    clock = Clock()
    backend = MemoryLimits(clock)
    for i in range(5000):
        await backend.hit(f"old{i}", 5, 60.0)
    clock.now += 61
    for i in range(5000):
        await backend.hit(f"new{i}", 5, 60.0)
    assert len(backend._hits) <= 5000
    assert not any(k.startswith("old") for k in backend._hits)


async def test_create_limiter_memory_by_default() -> None:
    limiter = create_limiter(Settings(max_streams=1, rate_limit_per_minute=5))
    assert isinstance(await limiter.admit("a"), Lease)
    assert isinstance(await limiter.admit("b"), Rejection)
    await limiter.close()


# --- redis ----------------------------------------------------------------------------------


async def test_redis_two_replicas_share_caps(redis: Redis) -> None:
    p = prefix()
    one = Limiter(RedisLimits(redis, prefix=p), max_streams=5, max_streams_per_key=3)
    two = Limiter(RedisLimits(redis, prefix=p), max_streams=5, max_streams_per_key=3)
    results = await asyncio.gather(*(lim.admit("k") for lim in (one, two) for _ in range(4)))
    leases = [r for r in results if isinstance(r, Lease)]
    assert len(leases) == 3
    assert all(r == Rejection("concurrency", 1, "key") for r in results if isinstance(r, Rejection))
    others = await asyncio.gather(*(lim.admit("j") for lim in (one, two) for _ in range(3)))
    assert sum(isinstance(r, Lease) for r in others) == 2  # the global cap of 5
    assert Rejection("concurrency", 1, "global") in others
    for lease in leases:
        await lease.release()
        await lease.release()
    assert await redis.zcard(f"{p}{{limits}}:streams:k") == 0
    assert isinstance(await two.admit("k"), Lease)
    await one.close()
    await two.close()


async def test_redis_crashed_replica_leases_expire(redis: Redis) -> None:
    p = prefix()
    crashed = Limiter(RedisLimits(redis, prefix=p, lease_ttl=0.3, heartbeat=None), max_streams=1)
    alive = Limiter(RedisLimits(redis, prefix=p, lease_ttl=0.3, heartbeat=None), max_streams=1)
    assert isinstance(await crashed.admit("a"), Lease)  # never released
    assert isinstance(await alive.admit("b"), Rejection)
    await asyncio.sleep(0.4)
    assert isinstance(await alive.admit("b"), Lease)


async def test_redis_heartbeat_keeps_leases_alive(redis: Redis) -> None:
    p = prefix()
    holder = Limiter(RedisLimits(redis, prefix=p, lease_ttl=0.3, heartbeat=0.05), max_streams=1,
                     max_streams_per_key=1)
    other = Limiter(RedisLimits(redis, prefix=p, lease_ttl=0.3, heartbeat=None), max_streams=1)
    lease = await holder.admit("a")
    assert isinstance(lease, Lease)
    await asyncio.sleep(0.6)
    assert isinstance(await other.admit("b"), Rejection)
    assert await redis.zcard(f"{p}{{limits}}:streams:a") == 1  # the per-key set is kept alive too
    await holder.close()  # drops the leases it still holds
    assert isinstance(await other.admit("b"), Lease)


async def test_redis_rate_limit_shared_with_retry_after(redis: Redis) -> None:
    p = prefix()
    one = Limiter(RedisLimits(redis, prefix=p), max_streams=100, rate_limit_per_minute=3)
    two = Limiter(RedisLimits(redis, prefix=p), max_streams=100, rate_limit_per_minute=3)
    admitted = [await lim.check_rate("k") for lim in (one, two, one)]
    assert admitted == [None, None, None]
    rejected = await two.check_rate("k")
    assert isinstance(rejected, Rejection)
    assert rejected.reason == "rate_limit"
    assert 59 <= rejected.retry_after <= 60
    assert await one.check_rate("other") is None


async def test_redis_rate_window_slides(redis: Redis) -> None:
    limiter = Limiter(RedisLimits(redis, prefix=prefix()), max_streams=10,
                      rate_limit_per_minute=1, window=0.2)
    assert await limiter.check_rate("k") is None
    assert await limiter.check_rate("k") == Rejection("rate_limit", 1)
    await asyncio.sleep(0.3)
    assert await limiter.check_rate("k") is None


async def test_redis_unreachable_fails_open_and_reports() -> None:
    errors: list[Exception] = []
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    limiter = create_limiter(
        Settings(max_streams=1, rate_limit_per_minute=1, max_streams_per_key=1),
        client=dead, on_error=errors.append,
    )
    first = await limiter.admit("a")
    assert isinstance(first, Lease)
    assert len(errors) == 1  # then Redis is skipped for a moment instead of erring per request
    second = await limiter.admit("a")
    assert isinstance(second, Lease)
    assert len(errors) == 1
    await first.release()
    await second.release()
    await limiter.close()
    await dead.aclose()


async def test_create_limiter_from_redis_url(redis_url: str) -> None:
    limiter = create_limiter(
        Settings(max_streams=1, redis_url=redis_url), prefix=prefix()
    )
    lease = await limiter.admit("a")
    assert isinstance(lease, Lease)
    assert isinstance(await limiter.admit("b"), Rejection)
    await lease.release()
    await limiter.close()
