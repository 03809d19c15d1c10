"""The upstream → client stream: bytes unchanged, each chunk flushed as it arrives.

A ``StreamRelay`` is the raw ASGI app a route returns once the upstream answered 2xx. Per stream
it runs three tasks and waits for the first to finish; the others are cancelled and the
upstream response is closed in ``finally``::

    pump       upstream chunk → observer.feed → send      (the hot path: no parsing, no objects)
    listener   receive() until http.disconnect             → client_disconnect
    watchdog   every tick: keepalive comment when idle,    → slow_client
               a client that blocks one write too long

An ``abort("drain")`` from the shutdown timer cancels the pump the same way. Whatever ends the
stream, the client gets ``message_stop`` or an ``event: error``, never a silent cut: an upstream
that ends without ``message_stop``, resets, or goes silent past the idle timeout gets an
Anthropic-shaped error event written by the gateway. Keepalives are SSE comments (SDKs ignore
them) and are only written between events, never inside one.

Why not Litestar's ``Stream`` response: it runs the same listener, but has no place for the
keepalive and slow-client watchdog, nor for writing a terminal event after a failure.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol, cast

import aiohttp

from gateway.errors import error_event
from gateway.proxy.upstream import response_headers
from gateway.state import RAW_SEND
from gateway.telemetry.logs import get_logger
from gateway.telemetry.stream import outcome_for_error

if TYPE_CHECKING:
    from litestar.types import Receive, Scope, Send

    from gateway.settings import Settings
    from gateway.telemetry.metrics import GatewayMetrics
    from gateway.telemetry.stream import StreamRecord

__all__ = ("KEEPALIVE", "Abortable", "RelayHub", "StreamRelay", "receive_disconnect")

log = get_logger("gateway.relay")

KEEPALIVE = b": keepalive\n\n"
_BASE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class Abortable(Protocol):
    """A live stream that a drain can end (a relay, or an agent run)."""

    def abort(self, reason: str) -> None:
        """End the stream with a retryable terminal event."""


class RelayHub:
    """The live streams of this process, so shutdown can reach them and the gauge counts them.

    Args:
        settings: Keepalive, send timeout and drain figures.
        metrics: Where ``claude_gateway_active_streams`` lives (None: telemetry off).
    """

    def __init__(self, settings: Settings, metrics: GatewayMetrics | None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.live: set[Abortable] = set()
        self.draining = False

    def add(self, stream: Abortable, route: str) -> None:
        """Count a stream as live."""
        self.live.add(stream)
        if self.metrics is not None:
            self.metrics.active_streams.labels(route).inc()

    def discard(self, stream: Abortable, route: str) -> None:
        """Count a stream as ended (idempotent)."""
        if stream in self.live:
            self.live.remove(stream)
            if self.metrics is not None:
                self.metrics.active_streams.labels(route).dec()

    def abort_all(self, reason: str) -> None:
        """End every live stream with a retryable error (used when the drain time is up)."""
        for relay in list(self.live):
            relay.abort(reason)


class StreamRelay:
    """Relay one upstream SSE response to one client (see the module docstring).

    Args:
        resp: The upstream's 2xx response, unread; closed by the relay.
        record: The stream's telemetry record, finished by the relay.
        hub: The process's relay registry.
        extra_headers: Headers added to the client response (gateway request id).
    """

    __slots__ = (
        "_abort_reason",
        "_hub",
        "_pump_task",
        "_sending",
        "_writes",
        "extra_headers",
        "record",
        "resp",
    )

    def __init__(
        self,
        resp: aiohttp.ClientResponse,
        record: StreamRecord,
        hub: RelayHub,
        extra_headers: list[tuple[bytes, bytes]],
    ) -> None:
        self.resp = resp
        self.record = record
        self.extra_headers = extra_headers
        self._hub = hub
        self._writes = 0
        self._sending = False
        self._abort_reason: str | None = None
        self._pump_task: asyncio.Task[tuple[str, str | None]] | None = None

    def abort(self, reason: str) -> None:
        """Stop relaying; ``__call__`` writes the terminal error event."""
        self._abort_reason = reason
        if self._pump_task is not None:
            self._pump_task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the relay as an ASGI app."""
        record = self.record
        headers = [*_BASE_HEADERS, *response_headers(self.resp.headers), *self.extra_headers]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body_send = cast("Send", scope.get(RAW_SEND, send))
        loop = asyncio.get_running_loop()
        pump = self._pump_task = loop.create_task(self._pump(body_send))
        listener = loop.create_task(receive_disconnect(receive))
        watchdog = loop.create_task(self._watchdog(body_send))
        self._hub.add(self, record.route)
        outcome: str = "gateway_error"
        error_type: str | None = "internal"
        try:
            await asyncio.wait((pump, listener, watchdog), return_when=asyncio.FIRST_COMPLETED)
            if pump.done() and not pump.cancelled():
                if pump.exception() is None:
                    outcome, error_type = pump.result()
                else:  # a bug of ours: still end the stream with an event, not a silent cut
                    log.error("relay.failed", exc_info=pump.exception())
                    await self._terminate(body_send, "api_error", "Internal gateway error.")
            elif listener.done() or watchdog.done():
                outcome = "client_disconnect"
                error_type = "slow_client" if watchdog.done() else None
                record.disconnect_phase = (
                    "before_first_token" if record.first_written is None else "mid_stream"
                )
            elif self._abort_reason is not None:
                await self._terminate(
                    body_send, "overloaded_error", "The gateway is restarting; retry the request."
                )
                outcome, error_type = "gateway_error", self._abort_reason
        finally:
            self._hub.discard(self, record.route)
            for task in (pump, listener, watchdog):
                task.cancel()
            await asyncio.gather(pump, listener, watchdog, return_exceptions=True)
            self.resp.close()
            await record.finish(outcome, error_type)
        if outcome != "client_disconnect":
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, send: Send) -> tuple[str, str | None]:
        record = self.record
        obs = record.observer
        try:
            read = self.resp.content.readany  # not iter_any(): one async layer less per event
            while chunk := await read():
                obs.feed(chunk)
                self._sending = True
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self._sending = False
                self._writes += 1
                if record.first_written is None and obs.first_delta_at is not None:
                    record.first_written = time.perf_counter()
        except (TimeoutError, aiohttp.ServerTimeoutError):
            await self._terminate(send, "timeout_error", "The upstream sent nothing for too long.")
            return "timeout", "upstream_idle_timeout"
        except (aiohttp.ClientError, OSError):
            await self._terminate(send, "api_error", "The upstream connection was lost mid-stream.")
            return "upstream_error", "upstream_reset"
        if obs.completed:
            return "ok", None
        if obs.error_type is not None:
            return outcome_for_error(obs.error_type), obs.error_type
        await self._terminate(send, "api_error", "The upstream ended the stream before message_stop.")
        return "upstream_error", "stream_cut"

    async def _terminate(self, send: Send, error_type: str, message: str) -> None:
        """Write the gateway's own terminal error event, closing any half-sent event first."""
        prefix = b"" if self.record.observer.at_boundary else b"\n\n"
        self.record.observer.error_type = self.record.observer.error_type or error_type
        await send(
            {
                "type": "http.response.body",
                "body": prefix + error_event(error_type, message),
                "more_body": True,
            }
        )

    async def _watchdog(self, send: Send) -> None:
        settings = self._hub.settings
        tick = min(settings.keepalive_seconds, settings.send_timeout) / 3
        idle_ticks = stalled_ticks = 0
        seen = self._writes
        while True:
            await asyncio.sleep(tick)
            if self._writes != seen:
                seen, idle_ticks, stalled_ticks = self._writes, 0, 0
                continue
            if self._sending:
                stalled_ticks += 1
                if stalled_ticks * tick >= settings.send_timeout:
                    return  # the client stopped reading: drop it rather than buffer without bound
                continue
            idle_ticks += 1
            if idle_ticks * tick >= settings.keepalive_seconds and self.record.observer.at_boundary:
                idle_ticks = 0
                self._sending = True
                await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                self._sending = False


async def receive_disconnect(receive: Receive) -> None:
    """Return when the client has gone (ASGI ``http.disconnect``)."""
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            return
