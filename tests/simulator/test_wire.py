"""Byte-level wire format, response headers, the record, and the pure helpers."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from gateway.settings import Settings
from gateway.simulator import SimulatorConfig, start_embedded
from gateway.simulator.config import Pacing
from gateway.simulator.content import split_json, tool_input
from gateway.simulator.models import MODELS, models_page
from gateway.simulator.record import Record
from tests.simulator.conftest import MODEL, body

TOOL = {"name": "lookup", "input_schema": {"type": "object", "properties": {
    "query": {"type": "string"}, "limit": {"type": "integer"}}, "required": ["query"]}}


def strict_events(raw: str) -> list[tuple[str, dict[str, object]]]:
    """Parse SSE strictly: each event is exactly `event:` + one `data:` line + blank line."""
    assert raw.endswith("\n\n")
    events = []
    for chunk in raw[:-2].split("\n\n"):
        lines = chunk.split("\n")
        assert len(lines) == 2, chunk
        assert lines[0].startswith("event: ")
        assert lines[1].startswith("data: ")
        name = lines[0].removeprefix("event: ")
        data = json.loads(lines[1].removeprefix("data: "))
        assert data["type"] == name
        events.append((name, data))
    return events


@pytest.mark.parametrize("extra", [{}, {"tools": [TOOL]},
                                   {"thinking": {"type": "adaptive"}, "tools": [TOOL]}])
async def test_sse_is_strictly_framed_and_ordered(http: httpx.AsyncClient,
                                                   extra: dict[str, object]) -> None:
    r = await http.post("/v1/messages", json=body(**extra))
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = strict_events(r.text)
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert isinstance(start, dict)
    assert start["model"] == MODEL
    assert start["content"] == []
    assert start["stop_reason"] is None
    usage = start["usage"]
    assert set(usage) >= {"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
                          "cache_creation", "output_tokens", "service_tier"}
    assert set(usage["cache_creation"]) == {"ephemeral_5m_input_tokens",
                                            "ephemeral_1h_input_tokens"}
    # Blocks open, get deltas for their own index only, and close, in index order.
    open_index = None
    next_index = 0
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None
            assert data["index"] == next_index
            open_index = data["index"]
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index, next_index = None, next_index + 1
    delta = events[-2][1]
    assert delta["usage"]["input_tokens"] == usage["input_tokens"]  # type: ignore[index]
    assert delta["usage"]["output_tokens"] >= 1  # type: ignore[index]


async def test_signature_comes_last_in_thinking_block(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/messages", json=body(thinking={"type": "enabled",
                                                            "budget_tokens": 2000}))
    events = strict_events(r.text)
    thinking = [d["delta"] for n, d in events if n == "content_block_delta" and d["index"] == 0]
    kinds = [d["type"] for d in thinking]  # type: ignore[index]
    assert kinds[-1] == "signature_delta"
    assert set(kinds[:-1]) == {"thinking_delta"}


async def test_response_headers(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/messages", json=body(stream=False))
    assert r.headers["request-id"].startswith("req_")
    assert r.headers["anthropic-organization-id"]
    for kind in ("requests", "tokens", "input-tokens", "output-tokens"):
        assert int(r.headers[f"anthropic-ratelimit-{kind}-limit"]) > 0
        assert int(r.headers[f"anthropic-ratelimit-{kind}-remaining"]) > 0
        assert r.headers[f"anthropic-ratelimit-{kind}-reset"].endswith("Z")
    other = await http.post("/v1/messages", json=body(stream=False))
    assert other.headers["request-id"] != r.headers["request-id"]


async def test_headers_recorded_and_credentials_redacted(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/messages?beta=true", json=body(stream=False), headers={
        "anthropic-version": "2023-06-01", "anthropic-beta": "context-1m-2025-08-07",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "authorization": "Bearer secret-token", "X-Request-ID": "abc-123"})
    assert r.status_code == 200
    stats = (await http.get("/_simulator/stats")).json()
    entry = next(e for e in stats["recent"] if e["request_id"] == r.headers["request-id"])
    headers = entry["headers"]
    assert headers["anthropic-beta"] == "context-1m-2025-08-07"
    assert headers["traceparent"].startswith("00-0af7")
    assert headers["x-request-id"] == "abc-123"
    assert headers["x-api-key"] == "[redacted]"
    assert headers["authorization"] == "[redacted]"
    assert "secret-token" not in json.dumps(stats)
    assert entry["path"] == "/v1/messages"
    assert entry["query"] == "beta=true"
    assert entry["stream"] is False
    assert entry["status"] == 200


async def test_embedded_in_running_loop_and_stops_with_open_stream() -> None:
    url, stop = await start_embedded(SimulatorConfig(fast=True))
    assert url.startswith("http://127.0.0.1:")
    async with (
        httpx.AsyncClient(base_url=url, headers={"x-api-key": "k"}) as h,
        h.stream("POST", "/v1/messages", json=body(),
                 headers={"x-simulator-scenario": "stall"}) as r,
    ):
        assert r.status_code == 200
        started = time.monotonic()
        await stop()
    assert time.monotonic() - started < 3.0
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=url) as h:
            await h.get("/_simulator/stats")


async def test_two_embedded_simulators_at_once() -> None:
    (url_a, stop_a), (url_b, stop_b) = await asyncio.gather(
        start_embedded(SimulatorConfig()), start_embedded(SimulatorConfig()))
    try:
        assert url_a != url_b
    finally:
        await asyncio.gather(stop_a(), stop_b())


def test_config_from_settings() -> None:
    settings = Settings(sim_ttft_seconds=0.1, sim_tokens_per_second=500.0, sim_fast=True)
    config = SimulatorConfig.from_settings(settings)
    assert (config.ttft_seconds, config.tokens_per_second, config.fast) == (0.1, 500.0, True)
    with pytest.raises(ValueError):
        SimulatorConfig(tokens_per_second=0)


def test_pacing_overrides() -> None:
    config = SimulatorConfig()
    pacing = Pacing.resolve(config, {"x-simulator-ttft-ms": "50",
                                     "x-simulator-tokens-per-second": "200"}, "")
    assert (pacing.ttft, pacing.interval, pacing.fast) == (0.05, 0.005, False)
    assert Pacing.resolve(config, {}, "slow_first_token").ttft == config.slow_first_token_seconds
    fast = Pacing.resolve(config, {"x-simulator-fast": "1"}, "")
    assert (fast.ttft, fast.interval) == (0.0, 0.0)
    with pytest.raises(ValueError, match="x-simulator-ttft-ms"):
        Pacing.resolve(config, {"x-simulator-ttft-ms": "soon"}, "")


def test_tool_input_follows_schema() -> None:
    schema = {"type": "object", "required": ["city", "when", "tags", "opts", "ratio"],
              "properties": {
                  "city": {"type": "string"}, "when": {"type": "string", "format": "date"},
                  "tags": {"type": "array", "items": {"type": "string"}},
                  "opts": {"type": "object", "properties": {"n": {"type": "integer"}},
                           "required": ["n"]},
                  "ratio": {"type": "number", "minimum": 0, "maximum": 1},
                  "unused": {"type": "string"}}}
    value = tool_input(schema, 7, "paris trip")
    assert set(value) == {"city", "when", "tags", "opts", "ratio"}
    assert value["city"] == "Paris"
    assert isinstance(value["tags"], list)
    assert isinstance(value["opts"]["n"], int)
    assert 0 <= value["ratio"] <= 1
    pieces = split_json(value, 7)
    assert pieces[0] == ""
    assert json.loads("".join(pieces)) == value
    assert tool_input(schema, 7, "paris trip") == value


def test_models_page_cursor() -> None:
    first = models_page(limit=4)
    assert [m["id"] for m in first["data"]] == list(MODELS[:4])
    assert first["has_more"]
    assert first["first_id"] == MODELS[0]
    assert first["last_id"] == MODELS[3]
    second = models_page(limit=4, after_id=first["last_id"])
    assert second["data"][0]["id"] == MODELS[4]
    last = models_page(limit=1000)
    assert not last["has_more"]
    assert len(last["data"]) == len(MODELS)
    with pytest.raises(ValueError):
        models_page(limit=0)


def test_record_is_bounded() -> None:
    record = Record(size=3)
    for i in range(10):
        entry = record.request(f"req_{i}", "POST", "/v1/messages", b"", {"x-api-key": "s"})
        record.client_closed(entry, i)
    snap = record.snapshot()
    assert snap["requests"] == 10
    assert snap["cancelled_total"] == 10
    assert [e["request_id"] for e in snap["recent"]] == ["req_7", "req_8", "req_9"]
    assert len(snap["cancelled"]) == 3
