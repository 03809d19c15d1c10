"""The resume store: each agent stream's encoded events, kept for replay with a live tail.

The runner calls ``create``, then ``append`` for every encoded SSE event (strictly increasing
``seq`` from 0) *before* sending it, and ``finish`` after ``stream_end``. Any number of
readers — the first client, or a client resuming with ``Last-Event-ID`` on any replica —
call ``read_from(stream_id, after_seq)``: it yields ``(seq, payload)`` for every stored event
with ``seq > after_seq`` (``-1`` for all), then each new one as it is appended, and ends once
the stream is finished and drained. No gap, no duplicate: replay and live tail are one
cursor over an append-only log. Events dropped by the ``max_events`` bound (or by a reader
more than ``max_events`` behind) show as a jump in ``seq``; callers can detect it.

Lifetime: a running stream lives ``running_ttl_seconds`` past its last append (a crashed
runner's stream goes away); a finished one ``ttl_seconds`` (``GATEWAY_RESUME_TTL_SECONDS``)
past ``finish``. After that every call treats the id as unknown. ``owner`` returns the
creator's key hash for the route's authorization check (compare with ``hmac.compare_digest``).

Cancel across replicas: ``request_cancel`` (the cancel route, on any replica) sets a flag
that the runner polls with ``cancel_requested`` — ``wait_for_cancel`` polls every 0.5 s and
returns when it is set, so the runner can race it against its work.

``MemoryEventStore`` serves one process; ``RedisEventStore`` shares streams between replicas
with a Redis Stream per agent stream (entry id ``<seq>-1``, ``MAXLEN ~ max_events``; a
terminal entry marks the end so blocked readers wake at once) and a hash for owner, meta and
state. Lua scripts keep "check state, then write" atomic. Each reader blocked in
``XREAD BLOCK`` holds one pooled connection for up to ``block_ms``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

    from gateway.settings import Settings

__all__ = (
    "EventStore",
    "EventStoreError",
    "MemoryEventStore",
    "RedisEventStore",
    "create_event_store",
    "wait_for_cancel",
)

_RUNNING_TTL = 3600.0


class EventStoreError(RuntimeError):
    """A write the stream's state forbids: unknown, existing, finished, or seq not increasing."""


class EventStore(Protocol):
    """What the agent runner and routes need from a resume store (see the module doc)."""

    async def create(self, stream_id: str, owner_key_hash: str, meta: Mapping[str, Any]) -> None:
        """Register a running stream; raises ``EventStoreError`` if the id exists."""

    async def append(self, stream_id: str, seq: int, payload: bytes) -> None:
        """Store one encoded event; raises ``EventStoreError`` if not running or seq repeats."""

    async def finish(self, stream_id: str) -> None:
        """Mark the stream ended (idempotent); readers drain and end, the TTL starts."""

    async def owner(self, stream_id: str) -> str | None:
        """The creator's key hash, or ``None`` for an unknown or expired stream."""

    async def meta(self, stream_id: str) -> dict[str, Any] | None:
        """The ``meta`` given to ``create``, or ``None``."""

    async def is_finished(self, stream_id: str) -> bool:
        """True once ``finish`` ran (False for an unknown stream)."""

    def read_from(self, stream_id: str, after_seq: int) -> AsyncIterator[tuple[int, bytes]]:
        """Yield stored then live events with ``seq > after_seq``; nothing if unknown."""

    async def request_cancel(self, stream_id: str) -> bool:
        """Ask the runner to stop; False when the stream is unknown or already finished."""

    async def cancel_requested(self, stream_id: str) -> bool:
        """True once ``request_cancel`` succeeded for this stream."""

    async def close(self) -> None:
        """Release connections; live readers end."""


async def wait_for_cancel(store: EventStore, stream_id: str, interval: float = 0.5) -> None:
    """Return once a cancel was requested for ``stream_id`` (polls every ``interval`` s)."""
    # Polling, not pub/sub: one cheap read per interval works the same on every store.
    while not await store.cancel_requested(stream_id):  # noqa: ASYNC110 - remote flag
        await asyncio.sleep(interval)


def create_event_store(settings: Settings) -> EventStore:
    """Return a Redis store when ``settings.redis_url`` is set, else an in-memory one."""
    if settings.redis_url:
        return RedisEventStore(
            settings.redis_url,
            ttl_seconds=settings.resume_ttl_seconds,
            max_events=settings.resume_max_events,
        )
    return MemoryEventStore(
        ttl_seconds=settings.resume_ttl_seconds, max_events=settings.resume_max_events
    )


@dataclass(slots=True, eq=False)
class _Stream:
    owner: str
    meta: dict[str, Any]
    events: deque[tuple[int, bytes]]
    expires_at: float
    appended: int = 0  # events ever appended = position of the next one
    last_seq: int = -1
    finished: bool = False
    cancel: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        # A fresh Event per change: waiters hold the old one, so no wakeup is lost or repeated.
        self.wake.set()
        self.wake = asyncio.Event()


class MemoryEventStore:
    """An ``EventStore`` in this process's memory; expired streams are swept lazily."""

    def __init__(
        self,
        *,
        ttl_seconds: float = 600.0,
        max_events: int = 10_000,
        max_streams: int = 10_000,
        running_ttl_seconds: float = _RUNNING_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create an empty store.

        Args:
            ttl_seconds: How long a finished stream stays readable.
            max_events: Events kept per stream; the oldest go first.
            max_streams: Streams kept; when full, the oldest finished one is evicted.
            running_ttl_seconds: How long a running stream lives past its last append.
            clock: Monotonic seconds (tests may pass their own).
        """
        self._ttl, self._running_ttl = ttl_seconds, running_ttl_seconds
        self._max_events, self._max_streams = max_events, max_streams
        self._clock = clock
        self._streams: dict[str, _Stream] = {}

    def _get(self, stream_id: str) -> _Stream | None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.expires_at <= self._clock():
            self._drop(stream_id)
            return None
        return stream

    def _drop(self, stream_id: str) -> None:
        stream = self._streams.pop(stream_id)
        stream.finished = True
        stream.notify()

    async def create(self, stream_id: str, owner_key_hash: str, meta: Mapping[str, Any]) -> None:
        """See ``EventStore.create``; also raises ``EventStoreError`` when the store is full."""
        now = self._clock()
        for sid in [s for s, st in self._streams.items() if st.expires_at <= now]:
            self._drop(sid)
        if stream_id in self._streams:
            raise EventStoreError(f"stream exists: {stream_id}")
        if len(self._streams) >= self._max_streams:
            oldest = next((s for s, st in self._streams.items() if st.finished), None)
            if oldest is None:
                raise EventStoreError("too many running streams")
            self._drop(oldest)
        events: deque[tuple[int, bytes]] = deque(maxlen=self._max_events)
        self._streams[stream_id] = _Stream(owner_key_hash, dict(meta), events,
                                           now + self._running_ttl)

    async def append(self, stream_id: str, seq: int, payload: bytes) -> None:
        """See ``EventStore.append``."""
        stream = self._get(stream_id)
        if stream is None or stream.finished:
            raise EventStoreError(f"stream not running: {stream_id}")
        if seq <= stream.last_seq:
            raise EventStoreError(f"seq {seq} not after {stream.last_seq}")
        stream.events.append((seq, payload))
        stream.appended += 1
        stream.last_seq = seq
        stream.expires_at = self._clock() + self._running_ttl
        stream.notify()

    async def finish(self, stream_id: str) -> None:
        """See ``EventStore.finish``."""
        stream = self._get(stream_id)
        if stream is not None and not stream.finished:
            stream.finished = True
            stream.expires_at = self._clock() + self._ttl
            stream.notify()

    async def owner(self, stream_id: str) -> str | None:
        """See ``EventStore.owner``."""
        stream = self._get(stream_id)
        return None if stream is None else stream.owner

    async def meta(self, stream_id: str) -> dict[str, Any] | None:
        """See ``EventStore.meta``."""
        stream = self._get(stream_id)
        return None if stream is None else dict(stream.meta)

    async def is_finished(self, stream_id: str) -> bool:
        """See ``EventStore.is_finished``."""
        stream = self._get(stream_id)
        return stream is not None and stream.finished

    async def read_from(self, stream_id: str, after_seq: int) -> AsyncIterator[tuple[int, bytes]]:
        """See ``EventStore.read_from``."""
        stream = self._get(stream_id)
        if stream is None:
            return
        skip = next((i for i, (s, _) in enumerate(stream.events) if s > after_seq), None)
        pos = stream.appended - len(stream.events) + (len(stream.events) if skip is None else skip)
        while True:
            # Recomputed each step: the deque may have grown and shifted while we yielded.
            first = stream.appended - len(stream.events)
            pos = max(pos, first)
            if pos < stream.appended:
                item = stream.events[pos - first]
                pos += 1
                if item[0] > after_seq:  # a reader may start ahead of the producer
                    yield item
            elif stream.finished:
                return
            else:
                await stream.wake.wait()

    async def request_cancel(self, stream_id: str) -> bool:
        """See ``EventStore.request_cancel``."""
        stream = self._get(stream_id)
        if stream is None or stream.finished:
            return False
        stream.cancel = True
        return True

    async def cancel_requested(self, stream_id: str) -> bool:
        """See ``EventStore.cancel_requested``."""
        stream = self._get(stream_id)
        return stream is not None and stream.cancel

    async def close(self) -> None:
        """End every live reader and forget all streams."""
        for stream_id in list(self._streams):
            self._drop(stream_id)


_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('EXISTS stream exists') end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'meta', ARGV[2], 'state', 'running')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
_APPEND = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'running' then return redis.error_reply('NOTRUNNING stream not running') end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], ARGV[1], 'p', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""
# The end marker gets the id just after the last event's (<seq>-2), or 0-1 with no events.
_FINISH = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'finished')
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local id = '0-1'
if #last > 0 then
  local ms, n = string.match(last[1][1], '^(%d+)-(%d+)$')
  id = ms .. '-' .. (tonumber(n) + 1)
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id, 'end', '1')
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return 1
"""
_CANCEL = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return 1
"""


class RedisEventStore:
    """An ``EventStore`` in Redis, shared by every replica (see the module doc for the layout).

    Keys share a hash tag (``{stream_id}``), so a stream's keys live on one Cluster slot.
    """

    def __init__(
        self,
        redis_url: str,
        prefix: str = "cgw:",
        *,
        ttl_seconds: float = 600.0,
        max_events: int = 10_000,
        running_ttl_seconds: float = _RUNNING_TTL,
        block_ms: int = 1000,
    ) -> None:
        """Create the store; connects lazily on first use.

        Args:
            redis_url: ``redis://``, ``rediss://`` or ``unix://`` URL.
            prefix: Prefix of every key.
            ttl_seconds: How long a finished stream stays readable.
            max_events: Approximate cap of events kept per stream (``MAXLEN ~``).
            running_ttl_seconds: How long a running stream lives past its last append.
            block_ms: Longest ``XREAD BLOCK``; a reader re-checks the stream's state this often.
        """
        self._redis = aioredis.Redis.from_url(redis_url, protocol=2)
        self._prefix = prefix
        self._ttl_ms = max(1, int(ttl_seconds * 1000))
        self._running_ms = max(1, int(running_ttl_seconds * 1000))
        self._max_events, self._block_ms = max_events, block_ms
        self._create = self._redis.register_script(_CREATE)
        self._append = self._redis.register_script(_APPEND)
        self._finish = self._redis.register_script(_FINISH)
        self._cancel = self._redis.register_script(_CANCEL)

    def _keys(self, stream_id: str) -> list[str]:
        base = f"{self._prefix}agent:{{{stream_id}}}:"
        return [base + "meta", base + "events", base + "cancel"]

    async def create(self, stream_id: str, owner_key_hash: str, meta: Mapping[str, Any]) -> None:
        """See ``EventStore.create``."""
        meta_json = json.dumps(dict(meta), separators=(",", ":"))
        args: list[str | int] = [owner_key_hash, meta_json, self._running_ms]
        try:
            await self._create(keys=self._keys(stream_id), args=args)
        except ResponseError as exc:
            raise EventStoreError(f"{stream_id}: {exc}") from None

    async def append(self, stream_id: str, seq: int, payload: bytes) -> None:
        """See ``EventStore.append``."""
        if seq < 0:
            raise EventStoreError(f"seq must be >= 0: {seq}")
        meta_key, events_key, _ = self._keys(stream_id)
        args: list[bytes | str | int] = [f"{seq}-1", payload, self._max_events, self._running_ms]
        try:
            await self._append(keys=[meta_key, events_key], args=args)
        except ResponseError as exc:
            raise EventStoreError(f"{stream_id}: {str(exc).split(' script:')[0]}") from None

    async def finish(self, stream_id: str) -> None:
        """See ``EventStore.finish``."""
        await self._finish(keys=self._keys(stream_id), args=[self._ttl_ms, self._max_events])

    async def _field(self, stream_id: str, name: str) -> bytes | None:
        return cast("bytes | None", await self._redis.hget(self._keys(stream_id)[0], name))

    async def owner(self, stream_id: str) -> str | None:
        """See ``EventStore.owner``."""
        value = await self._field(stream_id, "owner")
        return None if value is None else value.decode()

    async def meta(self, stream_id: str) -> dict[str, Any] | None:
        """See ``EventStore.meta``."""
        value = await self._field(stream_id, "meta")
        return None if value is None else dict(json.loads(value))

    async def is_finished(self, stream_id: str) -> bool:
        """See ``EventStore.is_finished``."""
        return await self._field(stream_id, "state") == b"finished"

    async def read_from(self, stream_id: str, after_seq: int) -> AsyncIterator[tuple[int, bytes]]:
        """See ``EventStore.read_from``: one ``XREAD`` cursor serves replay and live tail."""
        meta_key, events_key, _ = self._keys(stream_id)
        if not await self._redis.exists(meta_key):
            return
        cursor: bytes | str = f"{after_seq}-1" if after_seq >= 0 else "0-0"
        draining = False
        while True:
            block = None if draining else self._block_ms
            reply = cast(
                "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]",
                await self._redis.xread({events_key: cursor}, count=500, block=block),
            )
            entries = reply[0][1] if reply else []
            for entry_id, fields in entries:
                if b"end" in fields:
                    return
                cursor = entry_id
                yield int(entry_id.split(b"-", 1)[0]), fields[b"p"]
            if entries:
                continue
            if draining:
                return
            # Nothing new for block_ms: finished (its marker sits before our cursor) or gone
            # means one last non-blocking read, since events may have landed since XREAD.
            draining = await self._redis.hget(meta_key, "state") != b"running"

    async def request_cancel(self, stream_id: str) -> bool:
        """See ``EventStore.request_cancel``."""
        meta_key, _, cancel_key = self._keys(stream_id)
        return bool(await self._cancel(keys=[meta_key, cancel_key], args=[self._running_ms]))

    async def cancel_requested(self, stream_id: str) -> bool:
        """See ``EventStore.cancel_requested``."""
        return bool(await self._redis.exists(self._keys(stream_id)[2]))

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()
