"""The relay's own failure paths, with hand-written receive/send and a scripted upstream body."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from gateway.proxy.relay import RelayHub, StreamRelay
from gateway.settings import Settings
from gateway.telemetry.metrics import GatewayMetrics
from gateway.telemetry.pricing import PriceTable
from gateway.telemetry.stream import Telemetry
from gateway.telemetry.tool_latency import create_tool_correlation

START = b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"x","usage":{"input_tokens":3}}}\n\n'
STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}\n\n'


class FakeResponse:
    """Delivers its chunks to the relay's sink one loop turn apart, then ends after ``then`` s."""

    def __init__(self, chunks: list[bytes], then: float = 0.0) -> None:
        self.raw_headers = [(b"request-id", b"req_1")]  # names lower-cased, as Connection gives them
        self.chunks, self.then = list(chunks), then
        self.closed = False
        self.paused: list[bool] = []
        self.task: asyncio.Task[None] | None = None

    def attach(self, sink: Callable[[bytes, bytes | None], None]) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def deliver() -> None:
            try:
                for chunk in self.chunks:
                    await asyncio.sleep(0)
                    sink(chunk, None)
                await asyncio.sleep(self.then)
            except Exception as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        self.task = asyncio.create_task(deliver())
        return done

    def pause_reading(self) -> None:
        self.paused.append(True)

    def resume_reading(self) -> None:
        self.paused.append(False)

    def close(self) -> None:
        self.closed = True
        if self.task is not None:
            self.task.cancel()


def relay_for(resp: FakeResponse, **settings: Any) -> tuple[StreamRelay, GatewayMetrics, RelayHub]:
    s = Settings(**settings)
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, version="t", max_streams=10)
    telemetry = Telemetry(metrics, TracerProvider().get_tracer("t"), PriceTable.load(None),
                          create_tool_correlation(s))
    hub = RelayHub(s, metrics)
    record = telemetry.begin("/v1/messages", "x", stream=True, max_tokens=8, received=0.0)
    return StreamRelay(resp, record, hub, []), metrics, hub


async def never_disconnects() -> dict[str, Any]:
    await asyncio.sleep(3600)
    return {"type": "http.disconnect"}


async def test_a_failing_send_still_ends_with_an_error_event() -> None:
    """An exception while relaying (here: the second write fails) ends the stream with an event."""
    resp = FakeResponse([START, DELTA, DELTA])
    relay, metrics, hub = relay_for(resp)
    sent: list[dict[str, Any]] = []
    writes = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal writes
        if message["type"] == "http.response.body" and message.get("more_body") and b"event: error" not in message["body"]:
            writes += 1
            if writes == 2:
                raise RuntimeError("boom")
        sent.append(message)

    await asyncio.wait_for(relay({"type": "http"}, never_disconnects, send), 5)
    bodies = b"".join(m.get("body", b"") for m in sent)
    assert bodies.endswith(b'"message":"Internal gateway error."}}\n\n')
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert resp.closed
    assert not hub.live
    relay.record.telemetry.flush()  # recorded in batches
    assert metrics.requests.labels("/v1/messages", "gateway_error")._value.get() == 1


async def test_the_listener_ends_with_the_response_or_is_cancelled() -> None:
    """A server whose receive() answers once the response is complete (uvicorn's does) lets the
    disconnect listener end by itself, no cancellation thrown in; another server's is cancelled."""
    for answers in (True, False):
        relay, _, hub = relay_for(FakeResponse([START, DELTA, STOP]))
        complete = asyncio.Event()
        seen: list[str] = []

        async def receive(answers: bool = answers, complete: asyncio.Event = complete,
                          seen: list[str] = seen) -> dict[str, Any]:
            try:
                await (complete.wait() if answers else asyncio.sleep(3600))
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            seen.append("answered")
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any], complete: asyncio.Event = complete) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete.set()  # as uvicorn's send marks the response complete

        await asyncio.wait_for(relay({"type": "http"}, receive, send), 5)
        for _ in range(3):
            await asyncio.sleep(0)
        assert seen == (["answered"] if answers else ["cancelled"])
        assert not hub.live


async def test_keepalive_only_between_events_and_drain_abort() -> None:
    """A quiet upstream gets keepalive comments; a drain abort ends it with a retryable error."""
    resp = FakeResponse([START], then=3600)
    relay, metrics, hub = relay_for(resp, keepalive_seconds=0.1, send_timeout=5)
    sent: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message.get("body", b""))

    task = asyncio.create_task(relay({"type": "http"}, never_disconnects, send))
    await asyncio.sleep(0.5)
    assert b": keepalive\n\n" in sent
    hub.abort_all("drain")
    await asyncio.wait_for(task, 5)
    body = b"".join(sent)
    assert body.startswith(START)
    assert b'"type":"overloaded_error"' in body
    assert resp.closed
    relay.record.telemetry.flush()  # recorded in batches
    assert metrics.stream_errors.labels("/v1/messages", "drain")._value.get() == 1


async def test_one_ticker_for_every_relay_and_keepalive_after_a_whole_period() -> None:
    """Relays on one hub share its ticker: each quiet stream gets its keepalive, none sooner than
    the keepalive time after it started, and the ticker stops once no relay is left. The second
    relay starts in the middle of the hub's period and writes nothing before its first tick."""
    relay, _, hub = relay_for(FakeResponse([START], then=1.2), keepalive_seconds=0.3, send_timeout=5)
    record = relay.record.telemetry.begin("/v1/messages", "x", stream=True, max_tokens=8, received=0.0)
    second = StreamRelay(FakeResponse([], then=1.2), record, hub, [])
    loop = asyncio.get_running_loop()
    writes: list[list[tuple[float, bytes]]] = [[], []]

    def sender(log: list[tuple[float, bytes]]) -> Callable[[dict[str, Any]], Any]:
        async def send(message: dict[str, Any]) -> None:
            log.append((loop.time(), message.get("body", b"")))

        return send

    started = [loop.time()]
    first_task = asyncio.create_task(relay({"type": "http"}, never_disconnects, sender(writes[0])))
    await asyncio.sleep(0.05)
    started.append(loop.time())
    second_task = asyncio.create_task(second({"type": "http"}, never_disconnects, sender(writes[1])))
    await asyncio.wait_for(asyncio.gather(first_task, second_task), 5)
    for start, log in zip(started, writes, strict=True):
        keepalives = [t for t, body in log if body == b": keepalive\n\n"]
        assert keepalives, log
        assert keepalives[0] - start >= 0.3 - 0.01, (keepalives[0] - start, log)
    assert hub._ticker is not None
    await asyncio.sleep(hub.period + 0.05)
    assert hub._ticker is None


async def test_a_blocked_write_keeps_later_chunks_in_order() -> None:
    """A write that waits for the client pauses upstream reading; the chunks that still arrive
    are written after it, in order, as one write, and reading resumes."""
    chunks = [START, DELTA, DELTA.replace(b'"a"', b'"b"'), DELTA.replace(b'"a"', b'"c"'), STOP]
    resp = FakeResponse(chunks)
    relay, metrics, _ = relay_for(resp)
    gate = asyncio.Event()
    bodies: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and len(bodies) == 1:
            await gate.wait()  # the client's socket is full
        if message["type"] == "http.response.body":
            bodies.append(message["body"])

    task = asyncio.create_task(relay({"type": "http"}, never_disconnects, send))
    await asyncio.sleep(0.2)
    assert resp.paused == [True]
    assert bodies == [START]
    gate.set()
    await asyncio.wait_for(task, 5)
    assert b"".join(bodies) == b"".join(chunks)
    assert bodies[1] == DELTA  # the write that waited
    assert bodies[2] == b"".join(chunks[2:])  # what came meanwhile, in one write
    assert resp.paused == [True, False]
    relay.record.telemetry.flush()  # recorded in batches
    assert metrics.requests.labels("/v1/messages", "ok")._value.get() == 1
