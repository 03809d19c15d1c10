"""Mid-stream faults, early client close, and pacing, against a real uvicorn server."""

from __future__ import annotations

import asyncio
import time

import anthropic
import httpx
import pytest

from gateway.simulator import SimulatorConfig, start_embedded
from tests.simulator.conftest import MODEL, body


async def _events(http: httpx.AsyncClient, scenario: str) -> list[str]:
    async with http.stream("POST", "/v1/messages", json=body(),
                           headers={"x-simulator-scenario": scenario}) as r:
        assert r.status_code == 200
        text = (await r.aread()).decode()
    return [line.removeprefix("event: ") for line in text.splitlines()
            if line.startswith("event: ")]


async def test_overloaded_mid_stream(client: anthropic.AsyncAnthropic) -> None:
    seen: list[str] = []

    async def consume() -> None:
        async with client.messages.stream(
            model=MODEL, max_tokens=1024,
            messages=[{"role": "user", "content": "hi [sim:overloaded]"}],
        ) as stream:
            async for text in stream.text_stream:
                seen.append(text)

    with pytest.raises(anthropic.APIStatusError) as info:
        await consume()
    assert info.value.status_code == 200
    assert info.value.type == "overloaded_error"
    assert info.value.api_message == "Overloaded"
    assert len(seen) == 3  # fault_after_deltas in the fixture


async def test_overloaded_event_is_last(http: httpx.AsyncClient) -> None:
    events = await _events(http, "overloaded")
    assert events[-1] == "error"
    assert "message_stop" not in events


async def test_cut_ends_cleanly_without_message_stop(http: httpx.AsyncClient) -> None:
    events = await _events(http, "cut")
    assert events.count("content_block_delta") == 3
    assert "message_delta" not in events
    assert "message_stop" not in events


async def test_reset_drops_connection(http: httpx.AsyncClient) -> None:
    received = b""

    async def consume() -> None:
        nonlocal received
        async with http.stream("POST", "/v1/messages", json=body(),
                               headers={"x-simulator-scenario": "reset"}) as r:
            assert r.status_code == 200
            async for chunk in r.aiter_bytes():
                received += chunk

    with pytest.raises(httpx.RemoteProtocolError):
        await consume()
    assert b"content_block_delta" in received
    assert b"message_stop" not in received


async def test_stall_sends_nothing_more(http: httpx.AsyncClient, sim_url: str) -> None:
    async with http.stream("POST", "/v1/messages", json=body(),
                           headers={"x-simulator-scenario": "stall"}) as r:
        chunks = r.aiter_bytes()
        got = b""
        while got.count(b"event: content_block_delta") < 3:
            got += await anext(chunks)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await anext(chunks)
    await _await_cancelled(sim_url, request_id=r.headers["request-id"])


async def _await_cancelled(sim_url: str, *, request_id: str | None = None,
                           scenario: str | None = None) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=sim_url) as h:
        for _ in range(100):
            stats = (await h.get("/_simulator/stats")).json()
            hits = [c for c in stats["cancelled"]
                    if c["request_id"] == request_id or c["scenario"] == scenario]
            if hits:
                return hits[-1]  # type: ignore[no-any-return]
            await asyncio.sleep(0.01)
    raise AssertionError(f"no early close recorded for {request_id or scenario}")


async def test_client_close_is_recorded(client: anthropic.AsyncAnthropic, sim_url: str) -> None:
    started = time.monotonic()
    async with client.messages.stream(
        model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": "long answer"}],
        extra_headers={"x-simulator-fast": "0", "x-simulator-tokens-per-second": "50",
                       "x-simulator-ttft-ms": "0", "x-simulator-output-tokens": "500"},
    ) as stream:
        async for event in stream:
            if event.type == "text":
                break
    assert stream.request_id is not None
    record = await _await_cancelled(sim_url, request_id=stream.request_id)
    assert time.monotonic() - started < 2.0
    assert record["reason"] == "client_closed"
    assert record["scenario"] == "default"
    assert record["stream"] is True
    assert isinstance(record["events_sent"], int)
    assert 3 <= record["events_sent"] < 20
    async with httpx.AsyncClient(base_url=sim_url) as h:
        stats = (await h.get("/_simulator/stats")).json()
    entry = next(e for e in stats["recent"] if e["request_id"] == stream.request_id)
    assert entry["outcome"] == "client_closed"


async def test_ttft_and_pacing(sim_url: str) -> None:
    headers = {"x-api-key": "k", "x-simulator-fast": "0", "x-simulator-ttft-ms": "300",
               "x-simulator-tokens-per-second": "100", "x-simulator-output-tokens": "20"}
    async with httpx.AsyncClient(base_url=sim_url) as h:
        started = time.monotonic()
        first_delta = start_seen = None
        async with h.stream("POST", "/v1/messages", json=body(), headers=headers) as r:
            async for line in r.aiter_lines():
                if line == "event: message_start" and start_seen is None:
                    start_seen = time.monotonic() - started
                if line == "event: content_block_delta" and first_delta is None:
                    first_delta = time.monotonic() - started
        total = time.monotonic() - started
    assert start_seen is not None
    assert first_delta is not None
    assert start_seen < 0.25  # message_start and ping go out at once
    assert first_delta >= 0.3
    assert total >= 0.3 + 19 / 100


async def test_slow_first_token_scenario(http: httpx.AsyncClient) -> None:
    started = time.monotonic()
    r = await http.post("/v1/messages", json=body(), headers={
        "x-simulator-scenario": "slow_first_token", "x-simulator-ttft-ms": "400"})
    assert r.status_code == 200
    assert time.monotonic() - started >= 0.4


async def test_fast_mode_is_fast(http: httpx.AsyncClient) -> None:
    started = time.monotonic()
    r = await http.post("/v1/messages", json=body(max_tokens=4096),
                        headers={"x-simulator-output-tokens": "2000"})
    assert r.text.count("event: content_block_delta") == 2000
    assert time.monotonic() - started < 3.0


async def test_long_ttft_sends_pings() -> None:
    url, stop = await start_embedded(SimulatorConfig(ttft_seconds=0.35, ping_interval_seconds=0.1))
    try:
        async with httpx.AsyncClient(base_url=url, headers={"x-api-key": "k"}) as h:
            r = await h.post("/v1/messages", json=body(),
                             headers={"x-simulator-output-tokens": "3",
                                      "x-simulator-tokens-per-second": "1000"})
        head = r.text.split("event: content_block_delta", 1)[0]
        assert head.count("event: ping") >= 3
    finally:
        await stop()


async def test_reset_clears_record(own_sim: str) -> None:
    async with httpx.AsyncClient(base_url=own_sim, headers={"x-api-key": "k"}) as http:
        await http.post("/v1/messages", json=body(stream=False))
        stats = (await http.get("/_simulator/stats")).json()
        assert stats["requests"] == 1
        assert stats["completed"] == 1
        assert stats["active_streams"] == 0
        r = await http.post("/_simulator/reset")
        assert r.status_code == 200
        stats = (await http.get("/_simulator/stats")).json()
    assert stats["requests"] == 0
    assert stats["recent"] == []
