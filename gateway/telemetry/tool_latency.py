"""The ``client`` tool phase: from a ``tool_use`` id in one response to its ``tool_result``.

When a response streams a ``tool_use`` block (id X, tool N) the relay calls
``remember(X, N, now)``. When a later request carries a ``tool_result`` for X, the relay calls
``take_many([X, ...])`` and observes ``now - started`` as the client's tool run. Entries are
taken (removed) so a conversation replayed in later requests is timed once.

Memory (default) keeps at most ``tool_correlation_max`` ids, oldest evicted first, each for
``tool_correlation_ttl`` seconds. Redis (``GATEWAY_REDIS_URL``) stores one key per id with a
TTL, so the request carrying the result may land on another replica; ``take_many`` is one
round trip (pipelined ``GETDEL``). Telemetry never fails a request: Redis errors are reported
to ``on_error`` and the batch counts as unknown.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

import msgspec
import structlog
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.asyncio import Redis

    from gateway.settings import Settings

__all__ = (
    "MemoryToolCorrelation",
    "RedisToolCorrelation",
    "ToolCorrelation",
    "create_tool_correlation",
    "extract_tool_result_ids",
)

log = structlog.get_logger(__name__)

_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
_MAX_ID = 256  # ids are client-controlled; anything longer is not a real tool_use id
_MAX_BATCH = 512


class ToolCorrelation(Protocol):
    """What the relay needs; both stores implement it."""

    async def remember(self, tool_use_id: str, tool_name: str, at_unix: float) -> None:
        """Note that tool ``tool_name`` was asked for with id ``tool_use_id`` at ``at_unix``."""

    async def take_many(self, ids: list[str]) -> list[tuple[str, float]]:
        """Remove and return ``(tool_name, started_unix)`` for each id still remembered."""
        ...

    async def close(self) -> None:
        """Release resources."""


class MemoryToolCorrelation:
    """Bounded, expiring, in-process store (oldest evicted first).

    Args:
        ttl: Seconds an id is remembered.
        max_entries: Ids remembered at most.
        clock: Wall clock (seconds); injectable for tests.
    """

    def __init__(
        self, ttl: float, max_entries: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[str, float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def remember(self, tool_use_id: str, tool_name: str, at_unix: float) -> None:
        """Note a ``tool_use`` block; see :class:`ToolCorrelation`."""
        if len(tool_use_id) > _MAX_ID:
            return
        now = self._clock()
        entries = self._entries
        entries.pop(tool_use_id, None)  # re-insert at the end: keeps the order by expiry
        entries[tool_use_id] = (tool_name, at_unix, now + self._ttl)
        # Same TTL for all, so insertion order is expiry order: expired ones sit at the front.
        while entries and (len(entries) > self._max or next(iter(entries.values()))[2] <= now):
            entries.popitem(last=False)

    async def take_many(self, ids: list[str]) -> list[tuple[str, float]]:
        """Remove and return the remembered ids among ``ids``; see :class:`ToolCorrelation`."""
        now = self._clock()
        found: list[tuple[str, float]] = []
        for tool_use_id in ids[:_MAX_BATCH]:
            entry = self._entries.pop(tool_use_id, None)
            if entry is not None and entry[2] > now:
                found.append((entry[0], entry[1]))
        return found

    async def close(self) -> None:
        """Forget everything."""
        self._entries.clear()


class RedisToolCorrelation:
    """One Redis key per id with a TTL, shared by replicas.

    Args:
        client: The Redis client (closed in :meth:`close` only if ``owns_client``).
        ttl: Seconds an id is remembered.
        prefix: Key prefix.
        on_error: Called with each Redis error; the operation then does nothing.
        owns_client: Close ``client`` in :meth:`close`.
    """

    def __init__(
        self,
        client: Redis,
        ttl: float,
        *,
        prefix: str = "claude_gateway:",
        on_error: Callable[[Exception], None] | None = None,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._ttl_ms = max(1, int(ttl * 1000))
        self._prefix = f"{prefix}tool:"
        self._on_error = on_error
        self._owns = owns_client

    async def remember(self, tool_use_id: str, tool_name: str, at_unix: float) -> None:
        """Note a ``tool_use`` block; see :class:`ToolCorrelation`."""
        if len(tool_use_id) > _MAX_ID:
            return
        try:
            # repr(float) never contains "|", so the name may.
            await self._client.set(
                self._prefix + tool_use_id, f"{at_unix!r}|{tool_name}", px=self._ttl_ms
            )
        except _ERRORS as exc:
            self._failed(exc)

    async def take_many(self, ids: list[str]) -> list[tuple[str, float]]:
        """Remove and return the remembered ids among ``ids`` (one round trip)."""
        wanted = [i for i in ids[:_MAX_BATCH] if len(i) <= _MAX_ID]
        if not wanted:
            return []
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for tool_use_id in wanted:
                    pipe.getdel(self._prefix + tool_use_id)  # type: ignore[unused-awaitable]
                values = await pipe.execute()
        except _ERRORS as exc:
            self._failed(exc)
            return []
        found: list[tuple[str, float]] = []
        for value in values:
            if value is None:
                continue
            started, _, name = (value.decode() if isinstance(value, bytes) else value).partition(
                "|"
            )
            found.append((name, float(started)))
        return found

    async def close(self) -> None:
        """Close the client if this store created it."""
        if self._owns:
            await self._client.aclose()

    def _failed(self, exc: Exception) -> None:
        log.warning("tool_latency.redis_error", error=repr(exc))
        if self._on_error is not None:
            self._on_error(exc)


def create_tool_correlation(
    settings: Settings,
    *,
    client: Redis | None = None,
    prefix: str = "claude_gateway:",
    on_error: Callable[[Exception], None] | None = None,
) -> ToolCorrelation:
    """Build the store the settings ask for: Redis when ``redis_url`` is set, else memory.

    Args:
        settings: ``tool_correlation_ttl``, ``tool_correlation_max`` and ``redis_url`` are read.
        client: A Redis client to use instead of one built from ``redis_url`` (not closed).
        prefix: Redis key prefix.
        on_error: Called with each Redis error.
    """
    if client is None and not settings.redis_url:
        return MemoryToolCorrelation(settings.tool_correlation_ttl, settings.tool_correlation_max)
    owns = client is None
    if client is None:
        from redis.asyncio import Redis  # noqa: PLC0415 - only deployments with Redis pay

        client = Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    return RedisToolCorrelation(
        client, settings.tool_correlation_ttl, prefix=prefix, on_error=on_error, owns_client=owns
    )


class _Block(msgspec.Struct):
    type: str = ""
    tool_use_id: str | None = None


class _Message(msgspec.Struct):
    role: str = ""
    content: str | list[_Block] = ""


class _Body(msgspec.Struct):
    messages: list[_Message] = []


_decoder = msgspec.json.Decoder(_Body)


def extract_tool_result_ids(body: bytes) -> list[str]:
    """Return the ``tool_use_id`` of each ``tool_result`` in the last user message of ``body``.

    Called on every ``/v1/messages`` body, so a body without the bytes ``"tool_result"`` costs
    one substring search. Otherwise a typed msgspec decode reads only roles and content block
    types, skipping everything else. Only the last user message counts: earlier results were timed
    when they were new, and a long conversation would otherwise re-query all of them.
    Malformed bodies yield ``[]`` (validation is not this function's job).
    """
    if b'"tool_result"' not in body:
        return []
    try:
        messages = _decoder.decode(body).messages
    except msgspec.DecodeError:
        return []
    # The last user message (an assistant prefill may follow it).
    last = next((m for m in reversed(messages) if m.role == "user"), None)
    if last is None or isinstance(last.content, str):
        return []
    return [b.tool_use_id for b in last.content if b.type == "tool_result" and b.tool_use_id]
