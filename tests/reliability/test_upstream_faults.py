"""Issue 2: upstream faults before and after the first byte, idle upstreams, keepalives.

Each test checks what the client received, what ``/metrics`` and the ``stream.completed`` log
line say, and (where the upstream is the simulator) that the upstream request was closed.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.reliability.support import (
    ANTHROPIC_SECRET,
    RawStream,
    ScriptedUpstream,
    completed_lines,
    deltas_in,
    event_names,
    json_reply,
    last_error,
    log_records,
    message_body,
    metric,
    parse_sse,
    reply_with,
    scenario_body,
    scrape,
    sim_stats,
    sse_event,
    sse_head,
    text_stream,
    wait_for,
)
from tests.support.servers import free_port, run_gateway

if TYPE_CHECKING:
    from tests.support.servers import ServerProcess

ROUTE = "/v1/messages"


def _requests_for(sim: ServerProcess, scenario: str, since: float) -> list[dict]:
    return sorted((r for r in sim_stats(sim)["recent"] if r["scenario"] == scenario and r["time"] >= since),
                  key=lambda r: r["time"])


def _new_line(gateway: ServerProcess, count_before: int) -> dict:
    return completed_lines(gateway, count_before + 1)[-1]


def _post(gateway: ServerProcess, scenario: str | None = None) -> httpx.Response:
    body = scenario_body(scenario) if scenario else message_body()
    return httpx.post(gateway.url + ROUTE, json=body, timeout=30)


# --------------------------------------------------------------------------- before the first byte


@pytest.mark.parametrize(
    ("scenario", "status", "error_type", "outcome"),
    [("error_429", 429, "rate_limit_error", "rate_limited"),
     ("error_529", 529, "overloaded_error", "overloaded")],
)
def test_retry_after_is_honoured_then_reply_relayed(
    sim: ServerProcess, gateway: ServerProcess, scenario: str, status: int, error_type: str, outcome: str
) -> None:
    """429/529 with retry-after: MAX_RETRIES retries spaced by retry-after, then the upstream's reply."""
    before, lines = scrape(gateway.url), len(log_records(gateway, "stream.completed"))
    start = time.time()
    resp = _post(gateway, scenario)  # the simulator answers retry-after: 1
    elapsed = time.time() - start
    assert resp.status_code == status
    assert resp.json()["type"] == "error"
    assert resp.json()["error"]["type"] == error_type
    assert resp.headers["retry-after"] == "1"
    tries = _requests_for(sim, scenario, start)
    assert len(tries) == 3, "GATEWAY_UPSTREAM_MAX_RETRIES=2 means three tries"
    gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(tries)]
    assert all(gap >= 0.95 for gap in gaps), f"retry-after not honoured: gaps {gaps}"
    assert 1.9 <= elapsed < 6
    after = scrape(gateway.url)
    assert metric(after, "claude_gateway_upstream_retries_total", reason=str(status)) == (
        metric(before, "claude_gateway_upstream_retries_total", reason=str(status)) + 2)
    assert metric(after, "claude_gateway_upstream_responses_total", status_code=str(status)) == (
        metric(before, "claude_gateway_upstream_responses_total", status_code=str(status)) + 3)
    assert metric(after, "claude_gateway_requests_total", route=ROUTE, outcome=outcome) == (
        metric(before, "claude_gateway_requests_total", route=ROUTE, outcome=outcome) + 1)
    line = _new_line(gateway, lines)
    assert line["outcome"] == outcome
    assert line["status"] == status


def test_retry_after_beyond_total_wait_is_not_waited() -> None:
    """A retry-after longer than GATEWAY_UPSTREAM_RETRY_MAX_WAIT is not waited out: one try, reply relayed."""
    reply = json_reply(429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
                       "retry-after: 30\r\n")
    script = ScriptedUpstream([reply_with(reply)])
    with script.running():
        env = {"ANTHROPIC_BASE_URL": script.url, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET,
               "GATEWAY_UPSTREAM_MAX_RETRIES": "5", "GATEWAY_UPSTREAM_RETRY_MAX_WAIT": "10"}
        with run_gateway(env) as gateway:
            start = time.monotonic()
            resp = _post(gateway)
            assert resp.status_code == 429
            assert time.monotonic() - start < 2
            assert resp.headers["retry-after"] == "30", "the client gets the upstream's retry-after"
            assert resp.json()["error"]["type"] == "rate_limit_error"
            assert len(script.seen) == 1


def test_total_retry_wait_is_bounded() -> None:
    """Many retries allowed but GATEWAY_UPSTREAM_RETRY_MAX_WAIT=1.5 caps the time spent waiting."""
    reply = json_reply(529, {"type": "error", "error": {"type": "overloaded_error", "message": "o"}},
                       "retry-after: 0.6\r\n")
    script = ScriptedUpstream([reply_with(reply)])
    with script.running():
        env = {"ANTHROPIC_BASE_URL": script.url, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET,
               "GATEWAY_UPSTREAM_MAX_RETRIES": "10", "GATEWAY_UPSTREAM_RETRY_MAX_WAIT": "1.5"}
        with run_gateway(env) as gateway:
            start = time.monotonic()
            resp = _post(gateway)
            elapsed = time.monotonic() - start
            assert resp.status_code == 529
            assert elapsed < 2.5
            assert len(script.seen) == 3, "0.6 s + 0.6 s fit in 1.5 s, a third wait does not"


def test_5xx_retried_with_backoff(sim: ServerProcess, gateway: ServerProcess) -> None:
    """500 without retry-after: exponential backoff between tries, bounded by MAX_RETRIES."""
    before = scrape(gateway.url)
    start = time.time()
    resp = _post(gateway, "error_500")
    assert resp.status_code == 500
    assert resp.json()["error"]["type"] == "api_error"
    tries = _requests_for(sim, "error_500", start)
    assert len(tries) == 3
    gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(tries)]
    assert gaps[0] >= 0.3, f"no backoff before the first retry: {gaps}"
    assert gaps[1] >= gaps[0] * 1.2, f"backoff does not grow: {gaps}"
    after = scrape(gateway.url)
    assert metric(after, "claude_gateway_upstream_retries_total", reason="500") == (
        metric(before, "claude_gateway_upstream_retries_total", reason="500") + 2)


def test_4xx_is_not_retried(sim: ServerProcess, gateway: ServerProcess) -> None:
    """400 from the upstream goes straight back, one try."""
    start = time.time()
    resp = _post(gateway, "error_400")
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert len(_requests_for(sim, "error_400", start)) == 1


def test_connection_refused_retried_then_502() -> None:
    """No upstream listening: retried, then an Anthropic-shaped 5xx; counted as connect_error."""
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"ANTHROPIC_BASE_URL": dead, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET,
           "GATEWAY_UPSTREAM_MAX_RETRIES": "2", "GATEWAY_UPSTREAM_RETRY_MAX_WAIT": "10"}
    with run_gateway(env) as gateway:
        start = time.monotonic()
        resp = _post(gateway)
        elapsed = time.monotonic() - start
        assert resp.status_code == 502
        assert resp.json()["type"] == "error"
        assert resp.json()["error"]["type"] == "api_error"
        assert ANTHROPIC_SECRET not in resp.text
        assert dead not in resp.text, "the upstream address is not the client's business"
        assert elapsed >= 0.7, "retries must back off"
        text = scrape(gateway.url)
        assert metric(text, "claude_gateway_upstream_retries_total", reason="connect_error") == 2
        line = completed_lines(gateway)[-1]
        assert line["outcome"] == "upstream_error"


def test_retry_then_success_streams_normally() -> None:
    """529 then 200: the client sees only the successful stream."""
    script = ScriptedUpstream([
        reply_with(json_reply(529, {"type": "error", "error": {"type": "overloaded_error", "message": "o"}},
                              "retry-after: 0\r\n")),
        reply_with(sse_head() + text_stream(["Hello", " world"])),
    ])
    with script.running():
        env = {"ANTHROPIC_BASE_URL": script.url, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET}
        with run_gateway(env) as gateway:
            client = RawStream(gateway.url, ROUTE, message_body())
            assert client.read_head() == 200
            body = client.read_all()
            assert event_names(body)[-1] == "message_stop"
            assert "error" not in event_names(body)
            assert len(script.seen) == 2
            assert metric(scrape(gateway.url), "claude_gateway_upstream_retries_total", reason="529") == 1
            assert completed_lines(gateway)[-1]["outcome"] == "ok"


# --------------------------------------------------------------------------- after the first byte


def _stream(gateway: ServerProcess, scenario: str) -> tuple[RawStream, bytes]:
    client = RawStream(gateway.url, ROUTE, scenario_body(scenario))
    assert client.read_head() == 200
    body = client.read_all(timeout=15)
    return client, body


@pytest.mark.parametrize(
    ("scenario", "error_type", "outcome", "logged_error"),
    [
        ("overloaded", "overloaded_error", "overloaded", "overloaded_error"),
        ("reset", "api_error", "upstream_error", "upstream_reset"),
        ("cut", "api_error", "upstream_error", "stream_cut"),
    ],
)
def test_mid_stream_fault_ends_with_error_event(
    gateway: ServerProcess, scenario: str, error_type: str, outcome: str, logged_error: str
) -> None:
    """overloaded / reset / cut mid-stream: deltas, then exactly one terminal error event, clean end."""
    before, lines = scrape(gateway.url), len(log_records(gateway, "stream.completed"))
    client, body = _stream(gateway, scenario)
    assert client.ended, "the response must end with the terminal chunk, not a dropped connection"
    names = event_names(body)
    assert deltas_in(body) >= 1
    assert names[-1] == "error", f"last events: {names[-4:]}"
    assert names.count("error") == 1
    assert "message_stop" not in names
    assert last_error(body)["type"] == error_type
    line = _new_line(gateway, lines)
    assert line["outcome"] == outcome
    assert line["error_type"] == logged_error
    assert line["output_tokens"] >= deltas_in(body)
    after = scrape(gateway.url)
    assert metric(after, "claude_gateway_stream_errors_total", route=ROUTE, error_type=logged_error) == (
        metric(before, "claude_gateway_stream_errors_total", route=ROUTE, error_type=logged_error) + 1)
    assert metric(after, "claude_gateway_requests_total", route=ROUTE, outcome=outcome) == (
        metric(before, "claude_gateway_requests_total", route=ROUTE, outcome=outcome) + 1)


def test_stall_gets_idle_timeout_error_and_upstream_closed(
    sim: ServerProcess, gateway: ServerProcess
) -> None:
    """An upstream silent for GATEWAY_UPSTREAM_IDLE_TIMEOUT (1.5 s): timeout error event, upstream closed."""
    lines = len(log_records(gateway, "stream.completed"))
    start = time.monotonic()
    client, body = _stream(gateway, "stall")
    elapsed = time.monotonic() - start
    assert 1.4 <= elapsed < 5
    assert client.ended
    assert event_names(body)[-1] == "error"
    assert last_error(body)["type"] == "timeout_error"
    line = _new_line(gateway, lines)
    assert line["outcome"] == "timeout"
    assert line["error_type"] == "upstream_idle_timeout"
    rid = client.headers["request-id"]
    wait_for(lambda: any(c["request_id"] == rid for c in sim_stats(sim)["cancelled"]), timeout=3)


def test_keepalive_comments_while_first_token_is_slow(sim: ServerProcess) -> None:
    """GATEWAY_KEEPALIVE_SECONDS=0.4 and a 5 s TTFT: keepalive comments arrive before the first delta."""
    env = {"ANTHROPIC_BASE_URL": sim.url, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET,
           "GATEWAY_KEEPALIVE_SECONDS": "0.4", "GATEWAY_UPSTREAM_IDLE_TIMEOUT": "30"}
    with run_gateway(env) as gateway:
        client = RawStream(gateway.url, ROUTE, scenario_body("slow_first_token"))
        assert client.read_head() == 200
        body = client.read_all(timeout=15)
    head = body.split(b"event: content_block_delta", 1)[0]
    assert head.count(b": keepalive\n\n") >= 8, head
    # Comments only between events: the stream still parses to the same events.
    names = event_names(body)
    assert names[0] == "message_start"
    assert names[-1] == "message_stop"
    assert names.count("content_block_delta") >= 1


def test_upstream_dies_mid_event_client_still_gets_parseable_error() -> None:
    """Half an event then EOF: the gateway closes the half event and writes a parseable error event."""
    partial = text_stream(["Hello"], stop=False) + b'event: content_block_delta\ndata: {"type":"content_bl'
    script = ScriptedUpstream([reply_with(sse_head() + partial)])
    with script.running():
        env = {"ANTHROPIC_BASE_URL": script.url, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET}
        with run_gateway(env) as gateway:
            client = RawStream(gateway.url, ROUTE, message_body())
            client.read_head()
            body = client.read_all()
            assert client.ended
            error = last_error(body)
            assert error is not None, body[-300:]
            assert error["type"] == "api_error"
            for name, data in parse_sse(body):
                if name == "error":
                    json.loads(data)
            line = completed_lines(gateway)[-1]
            assert line["outcome"] == "upstream_error"
            assert line["error_type"] == "stream_cut"


def test_upstream_error_event_relayed_once_without_extra_terminal() -> None:
    """An upstream ``event: error`` ends the stream; the gateway adds no second error."""
    data = text_stream(["a", "b"], stop=False) + sse_event(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    script = ScriptedUpstream([reply_with(sse_head() + data)])
    with script.running():
        env = {"ANTHROPIC_BASE_URL": script.url, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET}
        with run_gateway(env) as gateway:
            client = RawStream(gateway.url, ROUTE, message_body())
            client.read_head()
            body = client.read_all()
            assert event_names(body).count("error") == 1
            assert completed_lines(gateway)[-1]["outcome"] == "overloaded"
