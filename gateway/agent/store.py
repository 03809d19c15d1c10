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
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

    from gateway.settings import Settings

__all__ = (
    "RUNNING_TTL",
    "EventStore",
    "EventStoreError",
    "MemoryEventStore",
    "create_event_store",
    "wait_for_cancel",
)

RUNNING_TTL = 3600.0


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
        from gateway.agent.store_redis import RedisEventStore  # noqa: PLC0415 - Redis only when asked

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
        running_ttl_seconds: float = RUNNING_TTL,
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
