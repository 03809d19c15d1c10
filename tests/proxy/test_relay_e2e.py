"""The relay against a real uvicorn and a scripted upstream: bytes, headers, auth, errors."""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.reliability.support import completed_lines
from tests.support.fake_upstream import FakeUpstream, Reply, sse
from tests.support.servers import free_port, run_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.servers import ServerProcess

UPSTREAM_KEY = "sk-ant-upstream-secret-0123456789"
CLIENT_KEY = "csg_client_key_abcdef"
BODY = {"model": "claude-sonnet-5-5", "max_tokens": 64, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]}
SSE_HEADERS = [("content-type", "text/event-stream; charset=utf-8"), ("request-id", "req_upstream_1"),
               ("anthropic-ratelimit-requests-remaining", "41"), ("anthropic-organization-id", "org-1")]
START = json.dumps({"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-5-5",
    "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 11, "output_tokens": 1}}})
DELTA = '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"%s"}}'


def stream_pieces() -> list[bytes]:
    """A stream cut at awkward places: mid-line, mid-UTF-8 character, two events per piece."""
    events = b"".join(sse(
        ("message_start", START),
        ("ping", '{"type": "ping"}'),
        ("content_block_start", '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'),
        ("content_block_delta", DELTA % "Grüße, "),
        ("content_block_delta", DELTA % "wörld ✓"),
        ("some_future_event", '{"type":"some_future_event","x":1}'),
        ("content_block_stop", '{"type":"content_block_stop","index":0}'),
        ("message_delta", '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
                          '"usage":{"output_tokens":6}}'),
        ("message_stop", '{"type":"message_stop"}'),
    ))
    cut = events.index("ü".encode()) + 1  # inside the two bytes of ü
    return [events[:40], events[40:cut], events[cut:cut + 300], events[cut + 300:]]


@pytest.fixture
def upstream_and_gateway(request: pytest.FixtureRequest) -> Iterator[tuple[FakeUpstream, ServerProcess]]:
    replies: list[Reply] = getattr(request, "param", None) or [Reply(200, SSE_HEADERS, stream_pieces())]
    with FakeUpstream(*replies) as upstream, run_gateway({
        "ANTHROPIC_BASE_URL": upstream.url, "ANTHROPIC_API_KEY": UPSTREAM_KEY,
        "GATEWAY_UPSTREAM_MAX_RETRIES": "2", "GATEWAY_UPSTREAM_RETRY_MAX_WAIT": "5",
    }) as gateway:
        yield upstream, gateway


def post_stream(url: str, **headers: str) -> tuple[httpx.Response, bytes]:
    with httpx.stream("POST", f"{url}/v1/messages", json=BODY, timeout=30,
                      headers={"anthropic-version": "2023-06-01", **headers}) as resp:
        return resp, resp.read()


def test_stream_bytes_are_relayed_unchanged(upstream_and_gateway: tuple[FakeUpstream, ServerProcess]) -> None:
    """The client gets exactly the upstream's bytes, unknown events and split characters included."""
    _, gateway = upstream_and_gateway
    resp, body = post_stream(gateway.url)
    assert resp.status_code == 200
    assert body == b"".join(stream_pieces())


def test_headers_pass_through_and_credentials_do_not(
    upstream_and_gateway: tuple[FakeUpstream, ServerProcess],
) -> None:
    """Version and beta go up, the gateway's key replaces the client's, rate-limit headers come back."""
    upstream, gateway = upstream_and_gateway
    resp, _ = post_stream(gateway.url, **{"anthropic-beta": "context-1m-2025-08-07",
                                          "x-api-key": "client-key-not-forwarded",
                                          "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    seen = upstream.seen[-1]
    assert seen.headers["anthropic-beta"] == "context-1m-2025-08-07"
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["x-api-key"] == UPSTREAM_KEY
    assert "authorization" not in seen.headers
    assert seen.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert json.loads(seen.body) == BODY
    assert resp.headers["request-id"] == "req_upstream_1"
    assert resp.headers["anthropic-ratelimit-requests-remaining"] == "41"
    assert resp.headers["cache-control"] == "no-cache"
    assert resp.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in resp.headers
    assert UPSTREAM_KEY not in gateway.log()


@pytest.mark.parametrize("upstream_and_gateway", [[Reply(200, SSE_HEADERS, stream_pieces(), pause=0.4)]],
                         indirect=True)
def test_each_event_is_flushed_as_it_arrives(upstream_and_gateway: tuple[FakeUpstream, ServerProcess]) -> None:
    """The first piece reaches the client long before the last one is sent."""
    _, gateway = upstream_and_gateway
    arrivals = []
    start = time.monotonic()
    with httpx.stream("POST", f"{gateway.url}/v1/messages", json=BODY, timeout=30) as resp:
        for chunk in resp.iter_raw():
            arrivals.append((time.monotonic() - start, chunk))
    assert arrivals[0][0] < 0.3
    assert arrivals[-1][0] > 1.0
    assert len(arrivals) >= 4


@pytest.mark.parametrize("upstream_and_gateway", [[
    Reply(400, [("content-type", "application/json"), ("request-id", "req_400")],
          [b'{"type":"error","error":{"type":"invalid_request_error","message":"roles must alternate"},'
           b'"request_id":"req_400"}']),
]], indirect=True)
def test_upstream_error_before_stream_keeps_status_and_body(
    upstream_and_gateway: tuple[FakeUpstream, ServerProcess],
) -> None:
    """A 400 from the upstream comes back as is, and is not retried."""
    upstream, gateway = upstream_and_gateway
    resp, body = post_stream(gateway.url)
    assert resp.status_code == 400
    assert json.loads(body)["error"]["message"] == "roles must alternate"
    assert resp.headers["request-id"] == "req_400"
    assert len(upstream.seen) == 1


@pytest.mark.parametrize("upstream_and_gateway", [[
    Reply(529, [("content-type", "application/json"), ("retry-after", "0")],
          [b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}']),
    Reply(200, SSE_HEADERS, stream_pieces()),
]], indirect=True)
def test_overloaded_before_first_byte_is_retried(upstream_and_gateway: tuple[FakeUpstream, ServerProcess]) -> None:
    """A 529 before the stream starts is retried; the client only sees the good stream."""
    upstream, gateway = upstream_and_gateway
    resp, body = post_stream(gateway.url)
    assert resp.status_code == 200
    assert body == b"".join(stream_pieces())
    assert len(upstream.seen) == 2
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'claude_gateway_upstream_retries_total{reason="529"} 1.0' in metrics


@pytest.mark.parametrize("upstream_and_gateway", [[
    Reply(429, [("content-type", "application/json"), ("retry-after", "60")],
          [b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}']),
]], indirect=True)
def test_rate_limit_longer_than_the_retry_budget_goes_back_with_retry_after(
    upstream_and_gateway: tuple[FakeUpstream, ServerProcess],
) -> None:
    """A retry-after past the total retry wait is not waited out: the client gets 429 + retry-after."""
    upstream, gateway = upstream_and_gateway
    resp, body = post_stream(gateway.url)
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "60"
    assert json.loads(body)["error"]["type"] == "rate_limit_error"
    assert len(upstream.seen) == 1


@pytest.mark.parametrize("upstream_and_gateway", [[
    Reply(200, SSE_HEADERS, [*list(sse(("message_start", START)))[:1],
                             *sse(("error", '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'))]),
]], indirect=True)
def test_in_stream_error_event_is_relayed(upstream_and_gateway: tuple[FakeUpstream, ServerProcess]) -> None:
    """The upstream's own error event reaches the client, and nothing is added after it."""
    _, gateway = upstream_and_gateway
    _, body = post_stream(gateway.url)
    assert body.endswith(b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n')
    assert body.count(b"event: error") == 1


@pytest.mark.parametrize("upstream_and_gateway", [[Reply(200, SSE_HEADERS, stream_pieces()[:2])]], indirect=True)
def test_stream_cut_without_message_stop_gets_an_error_event(
    upstream_and_gateway: tuple[FakeUpstream, ServerProcess],
) -> None:
    """An upstream that ends cleanly but early: the gateway writes a terminal error event."""
    _, gateway = upstream_and_gateway
    _, body = post_stream(gateway.url)
    assert body.startswith(b"".join(stream_pieces()[:2]))
    assert body.rstrip().endswith(b'"message":"The upstream ended the stream before message_stop."}}')
    log = completed_lines(gateway)  # recorded in batches, just after the stream
    assert log[-1]["outcome"] == "upstream_error"
    assert log[-1]["error_type"] == "stream_cut"
    assert log[-1]["input_tokens"] == 11


@pytest.mark.parametrize("upstream_and_gateway", [[Reply(200, SSE_HEADERS, stream_pieces(), reset_after=2)]],
                         indirect=True)
def test_upstream_reset_mid_stream_gets_an_error_event(
    upstream_and_gateway: tuple[FakeUpstream, ServerProcess],
) -> None:
    """A connection dropped mid-stream ends with an api_error event, never a silent cut."""
    _, gateway = upstream_and_gateway
    _, body = post_stream(gateway.url)
    assert b"event: error" in body
    assert body.endswith(b"\n\n")


def test_upstream_connection_refused_is_an_anthropic_error() -> None:
    """Nothing listens upstream: 502 with an Anthropic body, after the bounded retries."""
    with run_gateway({"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{free_port()}", "ANTHROPIC_API_KEY": "k",
                      "GATEWAY_UPSTREAM_MAX_RETRIES": "1"}) as gateway:
        resp, body = post_stream(gateway.url)
        assert resp.status_code == 502
        assert json.loads(body)["error"]["type"] == "api_error"
        assert 'claude_gateway_upstream_retries_total{reason="connect_error"} 1.0' in httpx.get(
            f"{gateway.url}/metrics").text


def test_both_auth_header_styles() -> None:
    """A configured gateway key works as x-api-key and as Bearer; anything else is a 401."""
    digest = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    with run_gateway({"GATEWAY_API_KEY_SHA256": digest, "GATEWAY_SIM_FAST": "true"}) as gateway:
        url = f"{gateway.url}/v1/messages"
        body = {**BODY, "stream": False}
        assert httpx.post(url, json=body, headers={"x-api-key": CLIENT_KEY}).status_code == 200
        assert httpx.post(url, json=body, headers={"authorization": f"Bearer {CLIENT_KEY}"}).status_code == 200
        for headers in ({}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}):
            resp = httpx.post(url, json=body, headers=headers)
            assert resp.status_code == 401
            assert resp.json()["error"]["type"] == "authentication_error"
        assert 'claude_gateway_rejected_total{reason="auth"} 3.0' in httpx.get(f"{gateway.url}/metrics").text
        assert CLIENT_KEY not in gateway.log()
