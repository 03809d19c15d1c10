r"""The load generator: concurrent streaming ``POST /v1/messages`` with per-event timing.

One aiohttp connection per concurrent stream (C response parser). Per stream it records the time
from sending the request to the first ``content_block_delta`` (TTFT) and the gap between each
event's arrival and the previous one's (events that arrive in the same read have a gap of 0).
Nothing is JSON-decoded: events are counted by their ``\\n\\n`` boundaries.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("LoadState", "pacing_headers", "run_load", "stream_body")

_DELTA = b"content_block_delta"
_STOP = b"message_stop"


def stream_body(output_tokens: int) -> bytes:
    """The request body of every bench stream (the pacing travels in ``pacing_headers``)."""
    return (
        b'{"model":"claude-sonnet-4-5","max_tokens":' + str(output_tokens * 4 + 256).encode()
        + b',"stream":true,"messages":[{"role":"user","content":"Benchmark the relay."}]}'
    )


def pacing_headers(output_tokens: int, token_rate: float) -> dict[str, str]:
    """The simulator's ``x-simulator-*`` headers for one phase (``token_rate`` 0 = fast).

    nginx passes them on, and the gateway passes them to a loopback upstream, so every leg
    gets the same streams from the same simulator.
    """
    headers = {"x-simulator-output-tokens": str(output_tokens), "x-simulator-scenario": "text",
               "x-simulator-ttft-ms": "0"}
    if token_rate <= 0:
        headers["x-simulator-fast"] = "1"
    else:
        headers["x-simulator-fast"] = "0"
        headers["x-simulator-tokens-per-second"] = f"{token_rate:g}"
    return headers


@dataclass
class LoadState:
    """Counters of one run, read live by the progress line and the samplers."""

    started: int = 0
    completed: int = 0
    errors: int = 0
    events: int = 0
    open_now: int = 0
    peak_open: int = 0
    ttfts: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    wall: float = 0.0

    def error(self, what: str) -> None:
        """Count a failed stream, keeping the first few reasons."""
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)


async def _one_stream(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
    state: LoadState, *, record_gaps: bool,
) -> None:
    state.started += 1
    t0 = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            if resp.status != 200:
                state.error(f"HTTP {resp.status}: {(await resp.read())[:200]!r}")
                return
            state.open_now += 1
            state.peak_open = max(state.peak_open, state.open_now)
            try:
                await _read(resp, t0, state, record_gaps=record_gaps)
            finally:
                state.open_now -= 1
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        state.error(f"{type(exc).__name__}: {exc}")


async def _read(resp: aiohttp.ClientResponse, t0: float, state: LoadState, *, record_gaps: bool) -> None:
    first: float | None = None
    last = 0.0
    tail = b""
    gaps = state.gaps
    async for chunk in resp.content.iter_any():
        now = time.perf_counter()
        n = chunk.count(b"\n\n")
        state.events += n
        if first is None:
            if _DELTA in chunk:
                first = last = now
                state.ttfts.append(now - t0)
        elif record_gaps and n:
            gaps.append(now - last)
            if n > 1:
                gaps.extend([0.0] * (n - 1))
            last = now
        tail = (tail + chunk)[-64:]
    if _STOP not in tail:
        state.error("stream ended without message_stop")
    else:
        state.completed += 1


async def run_load(
    url: str, *, concurrency: int, duration: float, body: bytes, headers: dict[str, str],
    streams_per_worker: int = 0, ramp_seconds: float = 0.0, record_gaps: bool = True,
    on_tick: Callable[[LoadState, float], None] | None = None,
) -> LoadState:
    """Run ``concurrency`` workers, each streaming back to back, and return what they saw.

    Args:
        url: Full URL of the streaming endpoint.
        concurrency: Streams open at once (one connection each).
        duration: Seconds after which no worker starts a new stream (in-flight ones finish).
        body: Request body.
        headers: Request headers.
        streams_per_worker: Stop each worker after this many streams (0: until ``duration``).
        ramp_seconds: Spread the workers' first requests over this long.
        record_gaps: Keep inter-event gaps (off for huge runs to save memory).
        on_tick: Called about four times a second with the live state and elapsed seconds.
    """
    state = LoadState()
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False,
                                     enable_cleanup_closed=False, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
    start = time.perf_counter()
    deadline = start + duration

    async def worker(index: int) -> None:
        if ramp_seconds > 0:
            await asyncio.sleep(ramp_seconds * index / concurrency)
        done = 0
        while time.perf_counter() < deadline or (streams_per_worker and done == 0):
            await _one_stream(session, url, body, headers, state, record_gaps=record_gaps)
            done += 1
            if streams_per_worker and done >= streams_per_worker:
                return

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.25)
            if on_tick is not None:
                on_tick(state, time.perf_counter() - start)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     auto_decompress=False, skip_auto_headers=("User-Agent",)) as session:
        tick = asyncio.ensure_future(ticker())
        try:
            await asyncio.gather(*(worker(i) for i in range(concurrency)))
        finally:
            tick.cancel()
    state.wall = time.perf_counter() - start
    if on_tick is not None:
        on_tick(state, state.wall)
    return state
