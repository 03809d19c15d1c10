"""Client tool-phase correlation: memory and Redis stores, and the request-body scan."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from gateway.settings import Settings
from gateway.telemetry.tool_latency import (
    MemoryToolCorrelation,
    RedisToolCorrelation,
    create_tool_correlation,
    extract_tool_result_ids,
)
from tests.support.clock import Clock

if TYPE_CHECKING:
    pass




# --- memory ---------------------------------------------------------------------------------


async def test_memory_remember_and_take_many_removes() -> None:
    store = MemoryToolCorrelation(ttl=60, max_entries=10)
    await store.remember("toolu_a", "get_weather", 100.0)
    await store.remember("toolu_b", "search", 101.5)
    got = await store.take_many(["toolu_b", "toolu_x", "toolu_a"])
    assert got == [("search", 101.5), ("get_weather", 100.0)]
    assert await store.take_many(["toolu_a", "toolu_b"]) == []  # taken once


async def test_memory_ttl_expires() -> None:
    clock = Clock(1_700_000_000.0)
    store = MemoryToolCorrelation(ttl=10, max_entries=10, clock=clock)
    await store.remember("old", "t", clock.now)
    clock.now += 5
    await store.remember("young", "t", clock.now)
    clock.now += 6
    assert await store.take_many(["old", "young"]) == [("t", clock.now - 6)]


async def test_memory_bounded_evicts_oldest_and_purges_expired() -> None:
    clock = Clock(1_700_000_000.0)
    store = MemoryToolCorrelation(ttl=10, max_entries=3, clock=clock)
    for i in range(5):
        await store.remember(f"id{i}", f"t{i}", float(i))
    assert len(store) == 3
    assert await store.take_many(["id0", "id1"]) == []
    clock.now += 11
    await store.remember("new", "t", 0.0)
    assert len(store) == 1  # the expired ones went on the way


async def test_memory_ignores_absurd_ids() -> None:
    store = MemoryToolCorrelation(ttl=10, max_entries=3)
    await store.remember("x" * 1000, "t", 0.0)
    assert len(store) == 0


# --- redis ----------------------------------------------------------------------------------


async def test_redis_shared_between_replicas_with_batch_take(redis: Redis) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    one = RedisToolCorrelation(redis, ttl=60, prefix=prefix)
    two = RedisToolCorrelation(redis, ttl=60, prefix=prefix)
    await one.remember("toolu_1", "get|weather", 1700000000.25)
    await one.remember("toolu_2", "search", 1700000001.5)
    got = await two.take_many(["toolu_1", "toolu_missing", "toolu_2"])
    assert got == [("get|weather", 1700000000.25), ("search", 1700000001.5)]
    assert await one.take_many(["toolu_1", "toolu_2"]) == []
    assert await two.take_many([]) == []


async def test_redis_ttl(redis: Redis) -> None:
    store = RedisToolCorrelation(redis, ttl=0.1, prefix=f"test:{uuid.uuid4().hex}:")
    await store.remember("toolu_1", "t", 1.0)
    await asyncio.sleep(0.2)
    assert await store.take_many(["toolu_1"]) == []


async def test_redis_errors_are_reported_not_raised() -> None:
    errors: list[Exception] = []
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    store = RedisToolCorrelation(dead, ttl=10, on_error=errors.append)
    await store.remember("toolu_1", "t", 1.0)
    assert await store.take_many(["toolu_1"]) == []
    assert len(errors) == 2
    await dead.aclose()


async def test_create_tool_correlation(redis_url: str) -> None:
    assert isinstance(create_tool_correlation(Settings()), MemoryToolCorrelation)
    store = create_tool_correlation(Settings(redis_url=redis_url), prefix=f"t:{uuid.uuid4()}:")
    assert isinstance(store, RedisToolCorrelation)
    await store.remember("toolu_1", "t", 2.0)
    assert await store.take_many(["toolu_1"]) == [("t", 2.0)]
    await store.close()


# --- body scan ------------------------------------------------------------------------------


def body(messages: list[dict[str, object]], **extra: object) -> bytes:
    return json.dumps({"model": "claude-opus-5-5", "max_tokens": 10, "messages": messages,
                       **extra}).encode()


def test_extract_without_tool_results_is_empty() -> None:
    assert extract_tool_result_ids(body([{"role": "user", "content": "hi"}])) == []
    assert extract_tool_result_ids(b"") == []
    assert extract_tool_result_ids(b"not json at all") == []


def test_extract_last_user_message_tool_results() -> None:
    messages: list[dict[str, object]] = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_old", "name": "w", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_old", "content": "sunny"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_a", "name": "w", "input": {}},
            {"type": "tool_use", "id": "toolu_b", "name": "s", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_a", "content": [
                {"type": "text", "text": "x"}], "is_error": False},
            {"type": "text", "text": "and"},
            {"type": "tool_result", "tool_use_id": "toolu_b", "content": "y"}]},
    ]
    assert extract_tool_result_ids(body(messages, tools=[{"name": "w"}])) == ["toolu_a", "toolu_b"]


def test_extract_ignores_malformed() -> None:
    assert extract_tool_result_ids(b'{"messages": [{"type": "tool_result"') == []
    assert extract_tool_result_ids(b'{"messages": "tool_result"}') == []
    assert extract_tool_result_ids(b'{"messages": [{"role": "user", "content": 5}], '
                                   b'"x": "tool_result"}') == []


def test_extract_skips_a_trailing_assistant_prefill() -> None:
    prefilled = body([
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        {"role": "assistant", "content": "prefill"},
    ])
    assert extract_tool_result_ids(prefilled) == ["t1"]
    text_last = body([
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "thanks"},
    ])
    assert extract_tool_result_ids(text_last) == []
