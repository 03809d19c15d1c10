"""The bench's ``python_floor`` leg: the least a Python proxy can do, a uvloop TCP splice.

Each client connection gets its own upstream connection, and every read on one side is written
to the other as it is: no HTTP parsing, no ASGI, no observation, no telemetry. What this costs
per event is what moving the bytes through a Python event loop costs; the gateway's CPU above it
is the gateway's own work (both HTTP sides, the observer, the telemetry). It is a measuring
stick, not a proxy: it forwards whatever arrives, request smuggling and all.

    python -m gateway.bench.floor_relay PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys

__all__ = ("main",)


class _Side(asyncio.Protocol):
    """One socket of a pair: what it reads is written to the other side."""

    def __init__(self) -> None:
        self.peer: _Side | None = None
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []  # read before the other side was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _Client(_Side):
    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.connecting: asyncio.Task[None] | None = None  # held: a task nobody holds may be collected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(_Side, "127.0.0.1", self.upstream_port)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        if self.transport is None or self.transport.is_closing():  # the client left meanwhile
            upstream.transport.close()  # type: ignore[union-attr]
            return
        upstream.peer, self.peer = self, upstream
        if self.pending and upstream.transport is not None:
            upstream.transport.write(b"".join(self.pending))
            self.pending.clear()


async def _serve(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(upstream_port), "127.0.0.1", port, backlog=8192)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    """Serve on ``argv[0]``, splicing to ``127.0.0.1:argv[1]``, until killed."""
    import uvloop  # noqa: PLC0415 - the gateway's own loop; only this leg needs it here

    uvloop.run(_serve(int(argv[0]), int(argv[1])))


if __name__ == "__main__":
    main(sys.argv[1:])
