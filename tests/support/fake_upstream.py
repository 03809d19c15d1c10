"""A scripted HTTP/1.1 upstream on a raw socket: exact bytes, exact chunking, recorded requests.

The simulator is faithful but not byte-for-byte repeatable (ids are random), so byte-faithfulness
is proven against this: each test scripts the status, headers and body pieces (with pauses),
the gateway relays them, and the test compares what the client got with what was scripted.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ("FakeUpstream", "Reply", "SeenRequest", "read_request")


@dataclass
class Reply:
    """One scripted response: ``pieces`` are written as separate chunks, ``pause`` apart."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    pieces: list[bytes] = field(default_factory=list)
    pause: float = 0.0
    reset_after: int | None = None
    """Drop the connection after this many pieces (no terminating chunk)."""
    hold: float = 0.0
    """Seconds to stay silent, connection open, after the pieces (a stall)."""


@dataclass
class SeenRequest:
    """What the upstream received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


async def read_request(reader: asyncio.StreamReader) -> SeenRequest:
    """Read one HTTP/1.1 request (head and ``content-length`` body) off a raw connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return SeenRequest(method, path, headers, body)


class FakeUpstream:
    """Serve scripted replies in order (the last one repeats) on a free loopback port."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.seen: list[SeenRequest] = []
        self.closed_early = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL of the fake."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        fut.result(5)
        return self

    def __exit__(self, *_: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def _next_reply(self) -> Reply:
        index = min(len(self.seen) - 1, len(self.replies) - 1)
        return self.replies[index]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                self.seen.append(await read_request(reader))
                if not await self._reply(reader, writer, self._next_reply()):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def _reply(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: Reply
    ) -> bool:
        head = [f"HTTP/1.1 {reply.status} X", "transfer-encoding: chunked"]
        head += [f"{k}: {v}" for k, v in reply.headers]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        for i, piece in enumerate(reply.pieces):
            if reply.reset_after is not None and i >= reply.reset_after:
                writer.transport.abort()
                return False
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            try:
                await writer.drain()
            except ConnectionError:
                self.closed_early += 1
                return False
            if reply.pause:
                await asyncio.sleep(reply.pause)
        if reply.hold:
            try:
                await asyncio.wait_for(reader.read(1), reply.hold)  # b"" once the peer closes
                self.closed_early += 1
            except TimeoutError:
                pass
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


def sse(*events: tuple[str, str]) -> Iterator[bytes]:
    """Encode ``(event, data)`` pairs the way Anthropic does."""
    for name, data in events:
        yield f"event: {name}\ndata: {data}\n\n".encode()
