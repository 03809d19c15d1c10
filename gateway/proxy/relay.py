"""The upstream → client stream: bytes unchanged, each chunk written as it arrives.

A ``StreamRelay`` is the raw ASGI app a route returns once the upstream answered 2xx. The body
does not pass through a task: the upstream client calls ``_relay`` from its read callback, which
feeds the observer and writes the chunk with the server's ``send`` run inline (``send_now``). Only
when the client's socket is full does a write suspend; then upstream reading pauses, a task
finishes the write and the chunks that came meanwhile, and reading resumes. Beside it::

    listener   receive() until http.disconnect (disconnect.py)  → client_disconnect
    watchdog   the hub's ticker, every tick: keepalive comment    → slow_client
               when idle, a client blocked one write too long

Whichever of {upstream over, listener, watchdog, ``abort("drain")``} comes first decides; the
upstream response is closed and the listener cancelled in ``finally``. Whatever ends the
stream, the client gets ``message_stop`` or an ``event: error``, never a silent cut: an
upstream that ends without ``message_stop``, resets, or goes silent past the idle timeout gets
an Anthropic-shaped error event written by the gateway. Keepalives are SSE comments (SDKs
ignore them) and are only written between events, never inside one.

Why not Litestar's ``Stream`` response: it runs the same listener, but has no place for the
keepalive and slow-client watchdog, nor for writing a terminal event after a failure.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol, cast

from gateway.errors import error_event
from gateway.proxy.disconnect import listen
from gateway.proxy.server_write import ChunkWriter, chunk_writer
from gateway.proxy.upstream import response_headers
from gateway.state import RAW_SEND
from gateway.telemetry.logs import get_logger
from gateway.telemetry.stream import outcome_for_error

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator

    from litestar.types import Receive, Scope, Send

    from gateway.settings import Settings
    from gateway.telemetry.metrics import GatewayMetrics
    from gateway.telemetry.stream import StreamRecord

__all__ = ("KEEPALIVE", "Abortable", "Body", "RelayHub", "StreamRelay", "send_now")

log = get_logger("gateway.relay")

KEEPALIVE = b": keepalive\n\n"
_BASE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class Body(Protocol):
    """What the relay reads: an upstream ``Response`` (``connection.py``), or a test's script."""

    raw_headers: list[tuple[bytes, bytes]]

    def attach(self, sink: Callable[[bytes, bytes | None], None]) -> asyncio.Future[None]:
        """Deliver the body to ``sink(piece, framed)``; the future completes when it ended."""

    def pause_reading(self) -> None:
        """Stop reading (the client is behind)."""

    def resume_reading(self) -> None:
        """Read again."""

    def close(self) -> None:
        """Done with the body."""


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
        #: Seconds between two watchdog ticks: a third of the keepalive or send timeout.
        self.period = min(settings.keepalive_seconds, settings.send_timeout) / 3
        # One timer ticks every relay's watchdog: a timer of each stream's own, armed and
        # cancelled, cost 4.6 k instructions a stream.
        self._watched: set[StreamRelay] = set()
        self._ticker: asyncio.TimerHandle | None = None

    def add(self, stream: Abortable, route: str) -> None:
        """Count a stream as live."""
        self.live.add(stream)
        if self.metrics is not None:
            self.metrics.add(self.metrics.active_streams, route)

    def watch(self, relay: StreamRelay) -> None:
        """Tick ``relay``'s watchdog every ``period`` until it is discarded."""
        self._watched.add(relay)
        self._arm()

    def _arm(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().call_later(self.period, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        for relay in tuple(self._watched):  # a copy: a tick may end its relay
            relay.tick()
        if self._watched:
            self._arm()

    def discard(self, stream: Abortable, route: str) -> None:
        """Count a stream as ended, and stop watching it (idempotent)."""
        if isinstance(stream, StreamRelay):
            self._watched.discard(stream)
        if stream in self.live:
            self.live.remove(stream)
            if self.metrics is not None:
                self.metrics.add(self.metrics.active_streams, route, amount=-1.0)

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
        "_backlog",
        "_direct",
        "_end",
        "_failure",
        "_flush",
        "_hub",
        "_idle_ticks",
        "_observer",
        "_seen",
        "_send",
        "_stalled_ticks",
        "_unmarked",
        "_upstream",
        "_writer",
        "_writes",
        "extra_headers",
        "record",
        "resp",
    )

    def __init__(
        self,
        resp: Body,
        record: StreamRecord,
        hub: RelayHub,
        extra_headers: list[tuple[bytes, bytes]],
    ) -> None:
        self.resp = resp
        self.record = record
        self.extra_headers = extra_headers
        # The per-event path reads these two rather than the record's: one object less to
        # touch an event, where a paced event finds every object cold.
        self._observer = record.observer
        self._unmarked = True  # no delta written yet (``record.first_written`` unset)
        self._hub = hub
        self._writes = 0
        self._backlog: list[bytes] | None = None  # not None while a write waits for the client
        self._flush: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._abort_reason = "drain"
        # Writes seen at the last tick. The hub's first tick may come at once: -1 makes it count
        # as a write seen, so keepalive and send timeout run from a whole tick, as they did
        # with a timer of the relay's own.
        self._seen = -1
        self._idle_ticks = self._stalled_ticks = 0

    def abort(self, reason: str) -> None:
        """Stop relaying; ``__call__`` writes the terminal error event."""
        self._abort_reason = reason
        self._decide("abort")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the relay as an ASGI app."""
        record = self.record
        headers = [*_BASE_HEADERS, *response_headers(self.resp.raw_headers), *self.extra_headers]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        self._send = cast("Send", scope.get(RAW_SEND, send))
        # Chunks go to the server's transport directly when it allows (``server_write``), to
        # ``send`` otherwise; ``_direct`` is None while a write waits for the client.
        self._writer: ChunkWriter | None = chunk_writer(scope, self._send)
        self._direct = self._writer
        loop = asyncio.get_running_loop()
        # Why the stream ends: "upstream" (over, bytes written), "disconnect", "slow_client", "abort".
        self._end: asyncio.Future[str] = loop.create_future()
        self._upstream = self.resp.attach(self._relay)
        self._upstream.add_done_callback(self._upstream_over)
        listener = listen(receive, self._client_gone)
        self._hub.add(self, record.route)
        self._hub.watch(self)
        outcome: str = "gateway_error"
        error_type: str | None = "internal"
        complete = False  # the response ends with its last message: the listener ends by itself
        try:
            why = await self._end
            if why == "upstream":
                outcome, error_type = await self._conclude()
            elif why == "abort":
                self._halt()
                await self._terminate("overloaded_error", "The gateway is restarting; retry the request.")
                outcome, error_type = "gateway_error", self._abort_reason
            else:
                outcome = "client_disconnect"
                error_type = "slow_client" if why == "slow_client" else None
                record.disconnect_phase = (
                    "before_first_token" if record.first_written is None else "mid_stream"
                )
            complete = outcome != "client_disconnect"
        finally:
            # Nothing here awaits the cancelled: their results matter to no one, and a task
            # per stream less to wait for is time saved on every stream.
            self._hub.discard(self, record.route)
            self._halt()
            if not complete:
                listener.cancel()
            if self._flush is not None:
                self._flush.cancel()
            await record.finish(outcome, error_type)
        if complete:
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                # uvicorn's send of the last message wakes the listener (its receive() answers
                # http.disconnect once the response is complete), which then ends before this
                # runs: no cancellation thrown through its frames. Another server's is cancelled.
                loop.call_soon(listener.cancel)

    def _decide(self, why: str) -> None:
        if not self._end.done():
            self._end.set_result(why)

    def _client_gone(self) -> None:
        self._decide("disconnect")

    def _relay(self, chunk: bytes, framed: bytes | None) -> None:
        """The hot path, called from the upstream's read callback: observe, then write.

        ``framed`` is ``chunk`` in the upstream's chunks when the read held whole ones: the
        client's framing too, written as it came.
        """
        self._observer.feed(chunk)
        direct = self._direct
        if direct is not None and direct.write(chunk, framed):
            self._writes += 1
            if self._unmarked:
                self._mark_first_written()
        else:
            self._write(chunk)

    def _mark_first_written(self) -> None:
        record = self.record
        if record.first_written is None and self._observer.first_delta_at is not None:
            record.first_written = time.perf_counter()
        self._unmarked = record.first_written is None

    def _write(self, chunk: bytes) -> None:
        """Write through ``send`` (a chunk the direct writer refused, an error event)."""
        if self._backlog is not None:
            self._backlog.append(chunk)
            return
        pending = send_now(self._send({"type": "http.response.body", "body": chunk, "more_body": True}))
        self._writes += 1
        if pending is None:
            if self._unmarked:
                self._mark_first_written()
        else:  # the client is behind: stop reading until this write is done
            self._backlog = []
            self._direct = None
            self.resp.pause_reading()
            self._flush = asyncio.get_running_loop().create_task(self._drain(pending))

    async def _drain(self, pending: Awaitable[None]) -> None:
        backlog = self._backlog
        try:
            await pending
            while backlog:
                chunk = b"".join(backlog)
                backlog.clear()
                await self._send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception as exc:  # noqa: BLE001 - ends the stream in __call__, with an event
            self._failure = exc
        else:
            self._mark_first_written()
        self._backlog = self._flush = None
        self._direct = self._writer
        self.resp.resume_reading()
        if self._failure is not None or self._upstream.done():
            self._upstream_over(self._upstream)

    def _upstream_over(self, _: asyncio.Future[None]) -> None:
        if self._backlog is None:
            self._decide("upstream")

    def _halt(self) -> None:
        """Stop reading the upstream (idempotent)."""
        self.resp.close()

    async def _conclude(self) -> tuple[str, str | None]:
        """The upstream is over and its bytes are written: name the outcome, end a cut stream."""
        obs = self._observer
        upstream = self._upstream
        failure = self._failure or (None if upstream.cancelled() else upstream.exception())
        if isinstance(failure, TimeoutError):
            await self._terminate("timeout_error", "The upstream sent nothing for too long.")
            return "timeout", "upstream_idle_timeout"
        if isinstance(failure, OSError):
            await self._terminate("api_error", "The upstream connection was lost mid-stream.")
            return "upstream_error", "upstream_reset"
        if failure is not None:  # a bug of ours: still end the stream with an event, not a silent cut
            log.error("relay.failed", exc_info=failure)
            await self._terminate("api_error", "Internal gateway error.")
            return "gateway_error", "internal"
        if obs.completed:
            return "ok", None
        if obs.error_type is not None:
            return outcome_for_error(obs.error_type), obs.error_type
        await self._terminate("api_error", "The upstream ended the stream before message_stop.")
        return "upstream_error", "stream_cut"

    async def _terminate(self, error_type: str, message: str) -> None:
        """Write the gateway's own terminal error event, closing any half-sent event first."""
        prefix = b"" if self._observer.at_boundary else b"\n\n"
        self._observer.error_type = self._observer.error_type or error_type
        await self._send(
            {
                "type": "http.response.body",
                "body": prefix + error_event(error_type, message),
                "more_body": True,
            }
        )

    def tick(self) -> None:
        """The watchdog, each hub tick: a keepalive comment when idle, the end of a client stuck too long."""
        hub = self._hub
        settings = hub.settings
        if self._writes != self._seen:
            self._seen, self._idle_ticks, self._stalled_ticks = self._writes, 0, 0
        elif self._backlog is not None:
            self._stalled_ticks += 1
            if self._stalled_ticks * hub.period >= settings.send_timeout:
                self._decide("slow_client")  # it stopped reading: drop it rather than buffer without bound
                return
        else:
            self._idle_ticks += 1
            idle = self._idle_ticks * hub.period >= settings.keepalive_seconds
            if idle and self._observer.at_boundary:
                self._idle_ticks = 0
                try:
                    if self._direct is not None and self._direct.write(KEEPALIVE):
                        self._writes += 1
                    else:
                        self._write(KEEPALIVE)
                except Exception as exc:  # noqa: BLE001 - ends the stream in __call__, with an event
                    self._failure = exc
                    self._decide("upstream")


def send_now(write: Awaitable[None]) -> Awaitable[None] | None:
    """Run an ASGI ``send`` coroutine without a task; None if it completed at once.

    A server's ``send`` only suspends when the client's socket buffer is full. Running it
    inline saves a task switch per event; when it does suspend, the returned awaitable finishes
    it, and the caller keeps later chunks until then.
    """
    step = write.__await__()
    try:
        blocker = step.send(None)
    except StopIteration:
        return None
    return _resume(step, blocker)


async def _resume(step: Generator[Any, None, None], blocker: Any) -> None:  # noqa: ANN401 - what it yielded
    while True:
        try:
            if blocker is None:  # a bare yield: give the loop one turn
                await asyncio.sleep(0)
            else:
                blocker._asyncio_future_blocking = False  # what a task does with a yielded future
                await blocker
        except asyncio.CancelledError:
            if blocker is None or not blocker.cancelled():  # we were cancelled, not its wait
                step.close()
                raise
        except Exception:  # noqa: BLE001, S110 - the coroutine sees its wait's outcome when resumed
            pass
        try:
            blocker = step.send(None)
        except StopIteration:
            return
