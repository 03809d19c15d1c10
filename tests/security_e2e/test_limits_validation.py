"""Issue 5: size, shape, policy, concurrency and rate limits: refused before any upstream call.

Every refusal has Anthropic's error shape and is counted in ``claude_gateway_rejected_total``.
The upstream is a standalone simulator, so its request count proves nothing was sent.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.reliability.support import (
    ANTHROPIC_SECRET,
    MODEL,
    RawStream,
    message_body,
    metric,
    scrape,
    sim_stats,
    wait_for,
)
from tests.support.servers import run_gateway, run_simulator

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.servers import ServerProcess

KEY_A, KEY_B = "csg_limit-key-a", "csg_limit-key-b"


def _sha(key: str) -> str:
    import hashlib  # noqa: PLC0415

    return hashlib.sha256(key.encode()).hexdigest()


LIMITS = {
    "GATEWAY_MAX_BODY_BYTES": "4096",
    "GATEWAY_MODEL_ALLOWLIST": f"{MODEL},claude-haiku-4-5",
    "GATEWAY_MAX_TOKENS_CAP": "2000",
    "GATEWAY_API_KEY_SHA256": f"{_sha(KEY_A)},{_sha(KEY_B)}",
}


@pytest.fixture(scope="module")
def sim() -> Iterator[ServerProcess]:
    """A slow simulator: streams last several seconds unless closed."""
    with run_simulator({"GATEWAY_SIM_TTFT_SECONDS": "0.05", "GATEWAY_SIM_TOKENS_PER_SECOND": "8"}) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(sim: ServerProcess) -> Iterator[ServerProcess]:
    """A gateway with every request limit configured."""
    env = {**LIMITS, "ANTHROPIC_BASE_URL": sim.url, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET}
    with run_gateway(env) as server:
        yield server


def _assert_refused(resp: httpx.Response, status: int, error_type: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


BAD_BODIES: list[tuple[str, bytes, int, str]] = [
    ("malformed json", b'{"model": "x", "max_tokens": 10, "messages": [', 400, "validation"),
    ("not an object", b"[1, 2, 3]", 400, "validation"),
    ("empty body", b"", 400, "validation"),
    ("missing model", json.dumps({"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}).encode(),
     400, "validation"),
    ("missing max_tokens", json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}).encode(),
     400, "validation"),
    ("missing messages", json.dumps({"model": MODEL, "max_tokens": 10}).encode(), 400, "validation"),
    ("empty messages", json.dumps({"model": MODEL, "max_tokens": 10, "messages": []}).encode(), 400, "validation"),
    ("bad role", json.dumps(message_body() | {"messages": [{"role": "system", "content": "x"}]}).encode(),
     400, "validation"),
    ("max_tokens not int", json.dumps(message_body() | {"max_tokens": "many"}).encode(), 400, "validation"),
    ("max_tokens zero", json.dumps(message_body() | {"max_tokens": 0}).encode(), 400, "validation"),
    ("max_tokens over cap", json.dumps(message_body(max_tokens=2001)).encode(), 400, "validation"),
    ("model not allowed", json.dumps(message_body() | {"model": "claude-opus-4-1"}).encode(), 400, "validation"),
    ("body too large", json.dumps(message_body(text="x" * 8192)).encode(), 413, "body_size"),
]


@pytest.mark.parametrize(("case", "raw", "status", "reason"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_input_rejected_before_upstream(
    sim: ServerProcess, gateway: ServerProcess, case: str, raw: bytes, status: int, reason: str
) -> None:
    """Each bad body: Anthropic-shaped 400/413, counted, and no upstream request."""
    before_metrics, before_upstream = scrape(gateway.url), sim_stats(sim)["requests"]
    resp = httpx.post(gateway.url + "/v1/messages", content=raw, timeout=10,
                      headers={"x-api-key": KEY_A, "content-type": "application/json"})
    _assert_refused(resp, status, "invalid_request_error" if status == 400 else "request_too_large")
    assert sim_stats(sim)["requests"] == before_upstream, f"{case}: the upstream was called"
    after = scrape(gateway.url)
    assert metric(after, "claude_gateway_rejected_total", reason=reason) == (
        metric(before_metrics, "claude_gateway_rejected_total", reason=reason) + 1)


def test_limits_at_the_edge_are_accepted(gateway: ServerProcess) -> None:
    """max_tokens equal to the cap and an allowlisted model go through."""
    resp = httpx.post(gateway.url + "/v1/messages", timeout=30, headers={"x-api-key": KEY_A},
                      json=message_body(stream=False, max_tokens=2000) | {"model": "claude-haiku-4-5"})
    assert resp.status_code == 200, resp.text


def test_count_tokens_validated_too(sim: ServerProcess, gateway: ServerProcess) -> None:
    """count_tokens with a disallowed model or no messages: 400, no upstream call."""
    before = sim_stats(sim)["requests"]
    for body in ({"model": "claude-opus-4-1", "messages": [{"role": "user", "content": "x"}]},
                 {"model": MODEL}):
        resp = httpx.post(gateway.url + "/v1/messages/count_tokens", json=body, headers={"x-api-key": KEY_A})
        _assert_refused(resp, 400, "invalid_request_error")
    assert sim_stats(sim)["requests"] == before


def _open_stream(gateway: ServerProcess, key: str) -> RawStream:
    return RawStream(gateway.url, "/v1/messages", message_body(), {"x-api-key": key})


def _refused_429(resp_client: RawStream, reason_type: str = "rate_limit_error") -> dict:
    assert resp_client.read_head() == 429
    body = json.loads(resp_client.read_all(timeout=5))
    assert body["error"]["type"] == reason_type
    assert int(resp_client.headers["retry-after"]) >= 1
    return body


def test_global_and_per_key_stream_caps(sim: ServerProcess) -> None:
    """GATEWAY_MAX_STREAMS=3, GATEWAY_MAX_STREAMS_PER_KEY=2: 429 with retry-after; slots come back."""
    env = {**LIMITS, "ANTHROPIC_BASE_URL": sim.url, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET,
           "GATEWAY_MAX_STREAMS": "3", "GATEWAY_MAX_STREAMS_PER_KEY": "2"}
    with run_gateway(env) as gateway:
        a1, a2 = _open_stream(gateway, KEY_A), _open_stream(gateway, KEY_A)
        for client in (a1, a2):
            assert client.read_head() == 200
        _refused_429(_open_stream(gateway, KEY_A))  # per-key cap
        b1 = _open_stream(gateway, KEY_B)
        assert b1.read_head() == 200
        _refused_429(_open_stream(gateway, KEY_B))  # global cap
        non_stream = httpx.post(gateway.url + "/v1/messages", headers={"x-api-key": KEY_B}, timeout=30,
                                json=message_body(stream=False, max_tokens=3))
        assert non_stream.status_code == 200, "the stream caps do not apply to non-streaming calls"
        assert metric(scrape(gateway.url), "claude_gateway_rejected_total", reason="concurrency") == 2
        a1.close()
        wait_for(lambda: metric(scrape(gateway.url), "claude_gateway_active_streams", route="/v1/messages") == 2)
        a3 = _open_stream(gateway, KEY_A)
        assert a3.read_head() == 200, "a closed stream gives its slot back"
        for client in (a2, a3, b1):
            client.close()


def test_per_key_rate_limit(sim: ServerProcess) -> None:
    """GATEWAY_RATE_LIMIT_PER_MINUTE=3: the 4th request of a key gets 429 + retry-after; other keys don't."""
    env = {**LIMITS, "ANTHROPIC_BASE_URL": sim.url, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET,
           "GATEWAY_RATE_LIMIT_PER_MINUTE": "3"}
    with run_gateway(env) as gateway:
        body = message_body(stream=False, max_tokens=2)
        for _ in range(3):
            assert httpx.post(gateway.url + "/v1/messages", json=body, headers={"x-api-key": KEY_A},
                              timeout=30).status_code == 200
        before = sim_stats(sim)["requests"]
        refused = httpx.post(gateway.url + "/v1/messages", json=body, headers={"x-api-key": KEY_A}, timeout=30)
        _assert_refused(refused, 429, "rate_limit_error")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert sim_stats(sim)["requests"] == before
        assert httpx.post(gateway.url + "/v1/messages", json=body, headers={"x-api-key": KEY_B},
                          timeout=30).status_code == 200
        text = scrape(gateway.url)
        assert metric(text, "claude_gateway_rejected_total", reason="rate_limit") == 1
        assert metric(text, "claude_gateway_requests_total", route="/v1/messages", outcome="rate_limited") == 1


@pytest.mark.system
def test_redis_shares_limits_between_replicas(sim: ServerProcess, redis_url: str) -> None:
    """Two replicas on one GATEWAY_REDIS_URL share the per-key rate and the per-key stream cap."""
    import redis  # noqa: PLC0415

    redis.Redis.from_url(redis_url).flushdb()
    env = {**LIMITS, "ANTHROPIC_BASE_URL": sim.url, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET,
           "GATEWAY_REDIS_URL": redis_url, "GATEWAY_RATE_LIMIT_PER_MINUTE": "4",
           "GATEWAY_MAX_STREAMS_PER_KEY": "1"}
    with run_gateway(env) as one, run_gateway(env) as two:
        held = _open_stream(one, KEY_A)
        assert held.read_head() == 200
        _refused_429(_open_stream(two, KEY_A))  # per-key stream cap seen by the other replica
        held.close()
        body = message_body(stream=False, max_tokens=2)
        # KEY_B: two requests on each replica use up 4/min; the fifth is refused on either.
        for gateway in (one, two, one, two):
            assert httpx.post(gateway.url + "/v1/messages", json=body, headers={"x-api-key": KEY_B},
                              timeout=30).status_code == 200
        refused = httpx.post(two.url + "/v1/messages", json=body, headers={"x-api-key": KEY_B}, timeout=30)
        _assert_refused(refused, 429, "rate_limit_error")
        assert "retry-after" in refused.headers
