"""Spans, metric samples and the log line for plain, tool-using, failing and disconnected streams."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

import httpx
import pytest
import structlog
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.settings import Settings
from gateway.telemetry import stream as stream_module
from gateway.telemetry.metrics import GatewayMetrics
from gateway.telemetry.pricing import PriceTable
from gateway.telemetry.stream import FLUSH_SECONDS, Telemetry
from gateway.telemetry.tool_latency import create_tool_correlation
from tests.support.inproc import serve_in_thread

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.inproc import InProcessGateway

MODEL = "claude-sonnet-5-5"
ROUTE = "/v1/messages"
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def body(**extra: object) -> dict[str, object]:
    return {"model": MODEL, "max_tokens": 256, "stream": True,
            "messages": [{"role": "user", "content": "Tell me about Paris"}], **extra}


@pytest.fixture
def gw() -> Iterator[InProcessGateway]:
    with serve_in_thread() as gateway:
        yield gateway


def stream(gw: InProcessGateway, payload: dict[str, object], **headers: str) -> bytes:
    with httpx.stream("POST", f"{gw.url}/v1/messages", json=payload, headers=headers, timeout=30) as resp:
        return resp.read()


def test_plain_stream(gw: InProcessGateway) -> None:
    """A text stream: one CLIENT span with GenAI attributes under the server span; TTFT, tokens, cost."""
    with structlog.testing.capture_logs() as logs:
        data = stream(gw, body(), traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        gw.wait_for("claude_gateway_requests_total", {"route": ROUTE, "outcome": "ok"}, 1)
    assert b"event: message_stop" in data
    (chat,) = gw.spans("chat ")
    assert chat.name == f"chat {MODEL}"
    assert chat.kind is SpanKind.CLIENT
    attrs = dict(chat.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.request.max_tokens"] == 256
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.response.id"].startswith("msg_")
    assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attrs["gen_ai.usage.output_tokens"] > 1
    assert attrs["gen_ai.response.time_to_first_chunk"] > 0
    assert [e.name for e in chat.events] == ["gen_ai.first_token"]
    assert chat.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736  # continued from traceparent
    sim = gw.app.state.gateway.upstream.base_url  # the upstream was told the chat span's context
    recent = httpx.get(f"{sim}/_simulator/stats", timeout=5).json()["recent"]
    (seen,) = [e for e in recent if e["request_id"] == attrs["gen_ai.response.request_id"]]
    assert seen["headers"]["traceparent"] == f"00-{chat.context.trace_id:032x}-{chat.context.span_id:016x}-01"
    assert chat.parent is not None
    deadline = time.monotonic() + 5  # the server span ends with the response's last message
    while chat.parent.span_id not in {s.context.span_id for s in gw.exporter.get_finished_spans()
                                      if s.kind is SpanKind.SERVER}:
        assert time.monotonic() < deadline, "the chat span's parent is not the server span"
        time.sleep(0.02)
    labels = {"route": ROUTE, "model": MODEL}
    assert gw.sample("claude_gateway_time_to_first_token_seconds_count", labels) == 1
    assert gw.sample("claude_gateway_overhead_seconds_count", {"route": ROUTE}) == 1
    assert gw.sample("claude_gateway_tokens_total", {"model": MODEL, "type": "output"}) == attrs[
        "gen_ai.usage.output_tokens"]
    assert gw.sample("claude_gateway_tokens_total", {"model": MODEL, "type": "input"}) > 0
    assert gw.sample("claude_gateway_cost_usd_total", {"model": MODEL}) > 0
    assert gw.sample("claude_gateway_active_streams", {"route": ROUTE}) == 0
    (line,) = [entry for entry in logs if entry["event"] == "stream.completed"]
    assert line["outcome"] == "ok"
    assert line["model"] == MODEL
    assert line["stop_reason"] == "end_turn"
    assert line["trace_id"] == f"{chat.context.trace_id:032x}"
    assert line["request_id"].startswith("req_")
    assert line["cost_usd"] > 0
    assert "Paris" not in json.dumps(line)  # no prompt content unless opted in
    assert "gen_ai.input.messages" not in attrs


def test_tool_stream_and_client_phase(gw: InProcessGateway) -> None:
    """A tool_use turn: a span event per tool, the generate phase, then the client phase on the next request."""
    first = stream(gw, body(tools=TOOLS))
    events = [json.loads(line[6:]) for line in first.decode().splitlines() if line.startswith("data: ")]
    tool_use = next(e["content_block"] for e in events
                    if e["type"] == "content_block_start" and e["content_block"]["type"] == "tool_use")
    gw.wait_for("claude_gateway_tool_calls_total", {"tool": "get_weather", "phase": "generate"}, 1)
    (chat,) = gw.spans("chat ")
    assert "gen_ai.tool_use" in [e.name for e in chat.events]
    assert gw.sample("claude_gateway_tool_duration_seconds_count", {"tool": "get_weather", "phase": "generate"}) == 1
    time.sleep(0.2)
    follow_up = body(tools=TOOLS, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [tool_use]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"], "content": "sunny"}]},
    ])
    stream(gw, follow_up)
    assert gw.sample("claude_gateway_tool_calls_total", {"tool": "get_weather", "phase": "client"}) == 1
    assert gw.sample("claude_gateway_tool_duration_seconds_sum", {"tool": "get_weather", "phase": "client"}) >= 0.2


def test_failing_stream(gw: InProcessGateway) -> None:
    """An in-stream overloaded error: error status on the span, outcome and error counted."""
    data = stream(gw, body(), **{"x-simulator-scenario": "overloaded"})
    assert b"overloaded_error" in data
    gw.wait_for("claude_gateway_requests_total", {"route": ROUTE, "outcome": "overloaded"}, 1)
    (chat,) = gw.spans("chat ")
    assert chat.status.status_code is StatusCode.ERROR
    assert dict(chat.attributes or {})["error.type"] == "overloaded_error"
    assert gw.sample("claude_gateway_stream_errors_total", {"route": ROUTE, "error_type": "overloaded_error"}) == 1


def test_disconnected_stream_counts_what_was_streamed(gw: InProcessGateway) -> None:
    """A client leaving mid-stream: outcome client_disconnect with phase, and the usage so far."""
    with httpx.stream("POST", f"{gw.url}/v1/messages", json=body(), timeout=30,
                      headers={"x-simulator-tokens-per-second": "20", "x-simulator-output-tokens": "200"}) as resp:
        seen = b""
        for chunk in resp.iter_raw():
            seen += chunk
            if seen.count(b"event: content_block_delta") >= 3:
                break
    gw.wait_for("claude_gateway_client_disconnects_total", {"route": ROUTE, "phase": "mid_stream"}, 1)
    assert gw.sample("claude_gateway_requests_total", {"route": ROUTE, "outcome": "client_disconnect"}) == 1
    assert gw.sample("claude_gateway_tokens_total", {"model": MODEL, "type": "output"}) >= 3
    (chat,) = gw.spans("chat ")
    assert chat.status.status_code is not StatusCode.ERROR
    assert dict(chat.attributes or {})["gateway.outcome"] == "client_disconnect"


def test_exemplars_and_trace_view(gw: InProcessGateway) -> None:
    """OpenMetrics exposition carries trace ids as exemplars; the trace view has the stream."""
    stream(gw, body())
    gw.wait_for("claude_gateway_requests_total", {"route": ROUTE, "outcome": "ok"}, 1)
    text = httpx.get(f"{gw.url}/metrics", headers={"accept": "application/openmetrics-text"}).text
    (chat,) = gw.spans("chat ")
    trace_id = f"{chat.context.trace_id:032x}"
    assert f'# {{trace_id="{trace_id}"}}' in text
    traces = httpx.get(f"{gw.url}/v1/gateway/traces").json()["traces"]
    assert traces[0]["trace_id"] == trace_id
    names = [s["name"] for s in traces[0]["spans"]]
    assert f"chat {MODEL}" in names


def test_telemetry_failure_never_fails_a_stream(gw: InProcessGateway) -> None:
    """An exception inside telemetry is caught and counted; the client still gets message_stop."""

    class Broken:
        async def remember(self, *_: object) -> None:
            raise RuntimeError("boom")

        async def take_many(self, _: list[str]) -> list[tuple[str, float]]:
            raise RuntimeError("boom")

        async def close(self) -> None:
            return None

    gw.state().telemetry.correlation = Broken()
    data = stream(gw, body(tools=TOOLS))
    assert data.rstrip().endswith(b'data: {"type":"message_stop"}')
    gw.wait_for("claude_gateway_telemetry_errors_total", {"component": "stream"}, 1)


def test_content_is_captured_only_when_opted_in() -> None:
    """With OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, the chat span holds the prompt and the answer."""
    with serve_in_thread(capture_content=True) as gw:
        data = stream(gw, body())
        gw.wait_for("claude_gateway_requests_total", {"route": ROUTE, "outcome": "ok"}, 1)
        (chat,) = gw.spans("chat ")
        attrs = dict(chat.attributes or {})
        assert "Tell me about Paris" in attrs["gen_ai.input.messages"]
        output = json.loads(attrs["gen_ai.output.messages"])[0]["parts"][0]["content"]
        texts = [json.loads(line[6:])["delta"]["text"] for line in data.decode().splitlines()
                 if line.startswith("data: ") and '"text_delta"' in line]
        assert output == "".join(texts)


TOOL_BLOCK = (
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
)
OK = ("claude_gateway_requests_total", {"route": ROUTE, "outcome": "ok"})


async def test_finished_streams_are_recorded_in_batches() -> None:
    """A finished stream waits for its batch; its tool calls are remembered at once."""
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, version="t", max_streams=10)
    correlation = create_tool_correlation(Settings())
    telemetry = Telemetry(metrics, None, PriceTable.load(None), correlation)
    records = [telemetry.begin(ROUTE, MODEL, stream=True, max_tokens=8, received=time.perf_counter())
               for _ in range(3)]
    records[0].observer.feed(TOOL_BLOCK)
    for record in records[:2]:
        await record.finish("ok")
    assert registry.get_sample_value(*OK) == 0
    assert [tool for tool, _ in await correlation.take_many(["toolu_01"])] == ["get_weather"]
    await asyncio.sleep(FLUSH_SECONDS * 4)
    assert registry.get_sample_value(*OK) == 2
    await records[2].finish("ok")
    telemetry.flush()
    assert registry.get_sample_value(*OK) == 3


async def test_a_scrape_and_shutdown_record_what_is_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    """``/metrics`` sees a stream that ended a moment ago; shutdown records the rest."""
    monkeypatch.setattr(stream_module, "FLUSH_SECONDS", 3600.0)
    registry = CollectorRegistry()
    app = create_app(Settings(), registry=registry, tracer_provider=TracerProvider(), environ={})
    async with AsyncTestClient(app) as client:
        telemetry: Telemetry = app.state.gateway.telemetry
        await telemetry.begin(ROUTE, MODEL, stream=True, max_tokens=8, received=time.perf_counter()).finish("ok")
        assert registry.get_sample_value(*OK) == 0
        scrape = await client.get("/metrics")
        assert 'claude_gateway_requests_total{outcome="ok",route="/v1/messages"} 1.0' in scrape.text
        await telemetry.begin(ROUTE, MODEL, stream=True, max_tokens=8, received=time.perf_counter()).finish("ok")
    assert registry.get_sample_value(*OK) == 2
