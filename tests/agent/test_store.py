"""The resume store, one suite for both implementations (memory, and a real Redis)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from gateway.agent.store import (
    EventStore,
    EventStoreError,
    MemoryEventStore,
    create_event_store,
    wait_for_cancel,
)
from gateway.agent.store_redis import RedisEventStore
from gateway.settings import Settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable



@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., EventStore]]:
    stores: list[EventStore] = []
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""

    def make(**kwargs: Any) -> EventStore:
        store: EventStore
        if url:
            store = RedisEventStore(url, f"t{uuid.uuid4().hex[:8]}:", block_ms=200, **kwargs)
        else:
            store = MemoryEventStore(**kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


async def collect(store: EventStore, stream_id: str, after: int) -> list[tuple[int, bytes]]:
    async with asyncio.timeout(10):
        return [item async for item in store.read_from(stream_id, after)]


def payload(seq: int) -> bytes:
    return f"id: s:{seq}\nevent: token\ndata: {{}}\n\n".encode()


async def test_lifecycle_and_state_errors(make_store: Callable[..., EventStore]) -> None:
    store = make_store()
    assert await store.owner("s") is None
    assert await store.meta("s") is None
    assert not await store.is_finished("s")
    assert await collect(store, "s", -1) == []
    with pytest.raises(EventStoreError):
        await store.append("s", 0, b"x")
    await store.finish("s")  # unknown: a no-op

    await store.create("s", "hash-a", {"model": "m", "turns": 2})
    with pytest.raises(EventStoreError):
        await store.create("s", "hash-b", {})
    assert await store.owner("s") == "hash-a"
    assert await store.meta("s") == {"model": "m", "turns": 2}
    await store.append("s", 0, payload(0))
    await store.append("s", 2, payload(2))
    for bad in (2, 1, -1):
        with pytest.raises(EventStoreError):
            await store.append("s", bad, b"x")
    assert not await store.is_finished("s")
    await store.finish("s")
    await store.finish("s")
    assert await store.is_finished("s")
    with pytest.raises(EventStoreError):
        await store.append("s", 3, b"x")
    assert await collect(store, "s", -1) == [(0, payload(0)), (2, payload(2))]
    assert await collect(store, "s", 0) == [(2, payload(2))]
    assert await collect(store, "s", 1) == [(2, payload(2))]
    assert await collect(store, "s", 2) == []
    assert await collect(store, "s", 99) == []


async def test_finished_stream_with_no_events(make_store: Callable[..., EventStore]) -> None:
    store = make_store()
    await store.create("e", "h", {})
    await store.finish("e")
    assert await collect(store, "e", -1) == []
    assert await collect(store, "e", 5) == []


async def test_replay_from_any_seq_while_appending(make_store: Callable[..., EventStore]) -> None:
    store = make_store()
    total = 200
    await store.create("live", "h", {})

    async def produce() -> None:
        for seq in range(total):
            await store.append("live", seq, payload(seq))
            if seq % 7 == 0:
                await asyncio.sleep(0.002)
        await store.finish("live")

    async def resume(after: int, delay: float) -> tuple[int, list[int]]:
        await asyncio.sleep(delay)
        return after, [seq for seq, _ in await collect(store, "live", after)]

    starts = [(-1, 0.0), (0, 0.01), (5, 0.02), (50, 0.03), (120, 0.05), (199, 0.0),
              (150, 0.08), (-1, 0.1), (300, 0.02)]
    async with asyncio.TaskGroup() as tg:
        tg.create_task(produce())
        readers = [tg.create_task(resume(after, delay)) for after, delay in starts]
    for task in readers:
        after, seqs = task.result()
        assert seqs == list(range(after + 1, total)), after
    # And once more after the end, from every position.
    for after in range(-1, total):
        if after % 37 == 0:
            assert [s for s, _ in await collect(store, "live", after)] == list(
                range(after + 1, total))


async def test_finish_wakes_a_waiting_reader(make_store: Callable[..., EventStore]) -> None:
    store = make_store()
    await store.create("w", "h", {})
    await store.append("w", 0, payload(0))
    reader = asyncio.create_task(collect(store, "w", -1))
    await asyncio.sleep(0.3)
    assert not reader.done()
    started = time.monotonic()
    await store.append("w", 1, payload(1))
    await store.finish("w")
    assert [s for s, _ in await reader] == [0, 1]
    assert time.monotonic() - started < 0.15


async def test_finished_streams_expire(make_store: Callable[..., EventStore]) -> None:
    store = make_store(ttl_seconds=0.3)
    await store.create("t", "h", {})
    await store.append("t", 0, payload(0))
    await store.request_cancel("t")
    await store.finish("t")
    assert await collect(store, "t", -1) == [(0, payload(0))]
    await asyncio.sleep(0.45)
    assert await store.owner("t") is None
    assert await store.meta("t") is None
    assert not await store.is_finished("t")
    assert not await store.cancel_requested("t")
    assert await collect(store, "t", -1) == []
    await store.create("t", "h2", {})  # the id is free again, with nothing left over
    assert await store.owner("t") == "h2"
    assert not await store.cancel_requested("t")


async def test_running_streams_expire_without_appends(
    make_store: Callable[..., EventStore],
) -> None:
    store = make_store(running_ttl_seconds=0.3)
    await store.create("r", "h", {})
    for seq in range(4):
        await asyncio.sleep(0.1)
        await store.append("r", seq, payload(seq))  # each append extends the lifetime
    assert await store.owner("r") == "h"
    await asyncio.sleep(0.45)
    assert await store.owner("r") is None


async def test_events_are_bounded(make_store: Callable[..., EventStore]) -> None:
    store = make_store(max_events=10)
    await store.create("b", "h", {})
    for seq in range(250):
        await store.append("b", seq, payload(seq))
    await store.finish("b")
    seqs = [s for s, _ in await collect(store, "b", -1)]
    assert seqs == list(range(seqs[0], 250))
    assert seqs[0] > 0
    # Memory keeps exactly max_events; Redis trims approximately (whole stream nodes).
    assert len(seqs) == 10 if isinstance(store, MemoryEventStore) else len(seqs) <= 110


async def test_cancel_signal(make_store: Callable[..., EventStore]) -> None:
    store = make_store()
    assert not await store.request_cancel("c")
    await store.create("c", "h", {})
    await store.create("other", "h", {})
    assert not await store.cancel_requested("c")
    waiter = asyncio.create_task(wait_for_cancel(store, "c", interval=0.02))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    assert await store.request_cancel("c")
    async with asyncio.timeout(2):
        await waiter
    assert await store.cancel_requested("c")
    assert not await store.cancel_requested("other")
    await store.finish("other")
    assert not await store.request_cancel("other")


async def test_two_stores_share_redis_streams(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    a, b = RedisEventStore(redis_url, prefix), RedisEventStore(redis_url, prefix, block_ms=200)
    try:
        await a.create("x", "h", {})
        reader = asyncio.create_task(collect(b, "x", -1))
        for seq in range(5):
            await a.append("x", seq, payload(seq))
        assert await b.request_cancel("x")
        assert await a.cancel_requested("x")
        await a.finish("x")
        assert [s for s, _ in await reader] == list(range(5))
    finally:
        await a.close()
        await b.close()


async def test_memory_store_bounds_streams() -> None:
    store = MemoryEventStore(max_streams=2)
    await store.create("a", "h", {})
    await store.create("b", "h", {})
    with pytest.raises(EventStoreError, match="too many"):
        await store.create("c", "h", {})
    await store.finish("a")
    await store.create("c", "h", {})  # evicts the finished "a"
    assert await store.owner("a") is None
    assert await store.owner("b") == "h"


async def test_memory_close_ends_readers() -> None:
    store = MemoryEventStore()
    await store.create("a", "h", {})
    await store.append("a", 0, b"x")
    reader = asyncio.create_task(collect(store, "a", -1))
    await asyncio.sleep(0.01)
    await store.close()
    assert await reader == [(0, b"x")]


async def test_create_event_store_follows_settings(redis_url: str) -> None:
    memory = create_event_store(Settings(resume_ttl_seconds=5, resume_max_events=3))
    assert isinstance(memory, MemoryEventStore)
    shared = create_event_store(Settings(redis_url=redis_url))
    assert isinstance(shared, RedisEventStore)
    await memory.close()
    await shared.close()
