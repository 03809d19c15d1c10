"""The bench's ``python_relay`` leg: the performance issue's "minimal Python relay".

A raw ASGI app on uvicorn (httptools, uvloop) that forwards the request with aiohttp's client (C
parser) and sends each upstream chunk as it arrives: no checks, no JSON, no observation, no
telemetry, no error events. The issue measured such a relay at "about 1.5x nginx" and set the
gateway's CPU target from it; run beside the gateway, it shows in each phase what the gateway's
checks and telemetry cost above the least an ASGI relay does. Like ``floor_relay``, it is a
measuring stick, not a proxy.

    python -m gateway.bench.asgi_relay PORT UPSTREAM_PORT
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ("RelayApp", "main")

# Hop-by-hop, or set again by the client from the body.
_DROPPED = frozenset({b"host", b"connection", b"content-length", b"transfer-encoding"})


class RelayApp:
    """The ASGI app: every request forwarded to ``upstream``, the response streamed back.

    Args:
        upstream: Base URL of the upstream (the simulator), without a trailing slash.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.session: Any = None  # an aiohttp.ClientSession, opened by the lifespan

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # noqa: ANN401 - ASGI
        """Serve the lifespan and HTTP requests."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._relay(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:  # noqa: ANN401 - ASGI
        import aiohttp  # noqa: PLC0415 - only this leg's process needs the client

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _relay(self, scope: Any, receive: Any, send: Any) -> None:  # noqa: ANN401 - ASGI
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in _DROPPED
        ]
        url = self.upstream + scope["path"]
        async with self.session.request(scope["method"], url, data=body, headers=headers) as resp:
            kind = resp.headers.get("content-type", "application/octet-stream").encode("latin-1")
            head = [(b"content-type", kind)]
            await send({"type": "http.response.start", "status": resp.status, "headers": head})
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def main(argv: list[str]) -> None:
    """Serve on ``argv[0]``, relaying to ``127.0.0.1:argv[1]``, until killed."""
    import uvicorn  # noqa: PLC0415

    uvicorn.run(
        RelayApp(f"http://127.0.0.1:{argv[1]}"), host="127.0.0.1", port=int(argv[0]),
        loop="uvloop", http="httptools", log_level="warning", access_log=False, backlog=8192,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
