"""Issue 4: SIGTERM drains: not ready, new streams refused, running streams end with a terminal event."""

from __future__ import annotations

import json
import signal
import time

import httpx

from tests.reliability.support import (
    RawStream,
    event_names,
    last_error,
    log_records,
    message_body,
    parse_sse,
)
from tests.support.servers import run_gateway

DRAIN = 2.5


def _stream(url: str, tokens: int) -> RawStream:
    client = RawStream(url, "/v1/messages", message_body(),
                       {"x-simulator-ttft-ms": "0", "x-simulator-tokens-per-second": "10",
                        "x-simulator-output-tokens": str(tokens)})
    assert client.read_head() == 200
    client.read_until(lambda b: b"content_block_delta" in b)
    return client


def test_sigterm_drains_streams_then_exits() -> None:
    """SIGTERM: /readyz 503, new stream 503 overloaded, short stream finishes, long one gets a retryable error."""
    env = {"GATEWAY_DRAIN_SECONDS": str(DRAIN), "GATEWAY_SIM_TTFT_SECONDS": "0.05",
           "GATEWAY_SIM_TOKENS_PER_SECOND": "10", "GATEWAY_KEEPALIVE_SECONDS": "0.5"}
    with run_gateway(env) as gateway:
        short = _stream(gateway.url, 12)
        long = _stream(gateway.url, 400)
        agent = RawStream(gateway.url, "/v1/agent/stream",
                          {"prompt": "[sim:text] tell me a long story about rivers", "tools": []})
        assert agent.read_head() == 200
        agent.read_until(lambda b: b"event: token" in b)

        gateway.proc.send_signal(signal.SIGTERM)
        sigterm_at = time.monotonic()

        ready = httpx.get(gateway.url + "/readyz", timeout=5)
        for _ in range(20):
            if ready.status_code == 503:
                break
            time.sleep(0.05)
            ready = httpx.get(gateway.url + "/readyz", timeout=5)
        assert ready.status_code == 503
        refused = httpx.post(gateway.url + "/v1/messages", json=message_body(), timeout=5)
        assert refused.status_code == 503
        assert refused.json()["type"] == "error"
        assert refused.json()["error"]["type"] == "overloaded_error"
        refused_agent = httpx.post(gateway.url + "/v1/agent/stream", json={"prompt": "hi"}, timeout=5)
        assert refused_agent.status_code == 503

        short_body = short.read_all(timeout=10)
        assert event_names(short_body)[-1] == "message_stop", "a stream that fits in the drain finishes"
        assert short.ended

        long_body = long.read_all(timeout=DRAIN + 10)
        ended_after = time.monotonic() - sigterm_at
        assert long.ended, "the long stream must end with the terminal chunk, not a cut"
        names = event_names(long_body)
        assert names[-1] == "error"
        assert "message_stop" not in names
        assert last_error(long_body)["type"] == "overloaded_error"  # retryable for every SDK
        assert DRAIN - 0.3 <= ended_after < DRAIN + 3

        agent_body = agent.read_all(timeout=DRAIN + 10)
        agent_events = parse_sse(agent_body)
        assert agent_events[-1][0] == "stream_end", agent_events[-3:]
        errors = [json.loads(data) for name, data in agent_events if name == "error"]
        assert errors, "the agent stream needs an error event before stream_end"
        assert errors[-1]["retryable"] is True

        gateway.proc.wait(15)
        assert gateway.proc.returncode in {0, -signal.SIGTERM}  # uvicorn re-raises the signal it caught
        assert any(r.get("event") == "gateway.draining" for r in log_records(gateway))
        outcomes = [r["outcome"] for r in log_records(gateway, "stream.completed")
                    if r.get("route") == "/v1/messages"]
        assert "ok" in outcomes
        assert len(outcomes) >= 2
