"""The Redis-backed resume store: one Redis Stream per agent stream, shared by every replica.

Layout (keys share a ``{stream_id}`` hash tag, so they live on one Cluster slot): a hash for
owner, meta and state; a Redis Stream of events with entry id ``<seq>-1`` (``MAXLEN ~
max_events``) and an end marker written by ``finish`` so blocked readers wake at once; a cancel
key. Lua scripts keep "check state, then write" atomic. See ``store.py`` for the contract.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from gateway.agent.store import RUNNING_TTL, EventStoreError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

__all__ = ("RedisEventStore",)


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
        running_ttl_seconds: float = RUNNING_TTL,
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
