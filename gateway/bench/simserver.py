"""The benchmark's upstream: the simulator with the bench's pacing applied to every request.

The gateway forwards ``x-simulator-*`` headers only to its embedded simulator, so a standalone
simulator behind the gateway (or behind nginx) would ignore the pacing the load generator asks
for. This wrapper reads the pacing from a ``[bench:events=N,rate=R]`` marker in the request body
(bodies pass every proxy unchanged) and turns it into ``x-simulator-*`` headers, so direct, nginx
and gateway legs all see the same upstream behaviour. Rate 0 means fast (no sleeps).

Run as ``python -m gateway.bench.simserver --port P --output-tokens N --token-rate R``.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING

import uvicorn

from gateway.simulator import SimulatorConfig, create_simulator_app

if TYPE_CHECKING:
    from gateway.simulator.asgi import Message, Receive, Scope, Send

__all__ = ("PacedSimulator", "main", "pacing_headers")


def pacing_headers(output_tokens: int, token_rate: float, ttft_ms: float) -> dict[str, str]:
    """The ``x-simulator-*`` headers for one bench configuration (``token_rate`` 0 = fast)."""
    headers = {"x-simulator-output-tokens": str(output_tokens), "x-simulator-scenario": "text"}
    if token_rate <= 0:
        headers["x-simulator-fast"] = "1"
        headers["x-simulator-ttft-ms"] = f"{ttft_ms:g}"
    else:
        headers["x-simulator-fast"] = "0"
        headers["x-simulator-tokens-per-second"] = f"{token_rate:g}"
        headers["x-simulator-ttft-ms"] = f"{ttft_ms:g}"
    return headers


_MARK = re.compile(rb"\[bench:events=(\d+),rate=([0-9.]+)\]")


class PacedSimulator:
    """ASGI wrapper: pacing from a ``[bench:events=N,rate=R]`` body marker, else the defaults."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.app = create_simulator_app(SimulatorConfig(fast=True, record_size=1))
        self.defaults = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request."""
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        headers = dict(self.defaults)
        mark = _MARK.search(body)
        if mark is not None:
            headers.update(pacing_headers(int(mark[1]), float(mark[2]),
                                          float(self.defaults.get("x-simulator-ttft-ms", "0"))))
        present = {name.lower() for name, _ in scope["headers"]}
        extra = [(k.encode(), v.encode()) for k, v in headers.items() if k.encode() not in present]
        scope = dict(scope)
        scope["headers"] = [*scope["headers"], *extra]
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def main(argv: list[str] | None = None) -> int:
    """Serve the paced simulator until SIGTERM."""
    parser = argparse.ArgumentParser(prog="gateway.bench.simserver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output-tokens", type=int, default=90)
    parser.add_argument("--token-rate", type=float, default=0.0)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    app = PacedSimulator(pacing_headers(args.output_tokens, args.token_rate, args.ttft_ms))
    config = uvicorn.Config(
        app, host="127.0.0.1", port=args.port, lifespan="off", log_level="warning",
        http="httptools", loop="uvloop", access_log=False, backlog=8192, timeout_keep_alive=75,
        timeout_graceful_shutdown=2,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
