"""HTTP errors: Anthropic-shaped bodies, the SDK's typed exceptions, request validation."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.simulator.conftest import MODEL, body


def _create(client: anthropic.AsyncAnthropic, scenario: str, **headers: str) -> object:
    return client.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"x-simulator-scenario": scenario, **headers})


async def test_429_rate_limit_with_retry_after(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as info:
        await _create(client, "error_429")  # type: ignore[misc]
    assert info.value.status_code == 429
    assert info.value.type == "rate_limit_error"
    assert info.value.response.headers["retry-after"] == "1"
    assert info.value.request_id is not None
    assert info.value.body["request_id"] == info.value.request_id  # type: ignore[index]


async def test_retry_after_override(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as info:
        await _create(client, "error_429", **{"x-simulator-retry-after": "7"})  # type: ignore[misc]
    assert info.value.response.headers["retry-after"] == "7"


async def test_529_overloaded(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.OverloadedError) as info:
        await _create(client, "error_529")  # type: ignore[misc]
    assert info.value.type == "overloaded_error"
    assert info.value.response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("scenario", "exc_type", "error_type"),
    [
        ("error_400", anthropic.BadRequestError, "invalid_request_error"),
        ("error_401", anthropic.AuthenticationError, "authentication_error"),
        ("error_500", anthropic.InternalServerError, "api_error"),
    ],
)
async def test_error_scenarios(client: anthropic.AsyncAnthropic, scenario: str,
                               exc_type: type[anthropic.APIStatusError], error_type: str) -> None:
    with pytest.raises(exc_type) as info:
        await _create(client, scenario)  # type: ignore[misc]
    assert info.value.type == error_type
    assert "retry-after" not in info.value.response.headers


async def test_error_scenario_by_keyword(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.RateLimitError):
        async with client.messages.stream(
            model=MODEL, max_tokens=64,
            messages=[{"role": "user", "content": "please [sim:error_429] now"}],
        ) as stream:
            await stream.get_final_message()


async def test_missing_credentials_is_401(sim_url: str) -> None:
    async with httpx.AsyncClient(base_url=sim_url) as h:
        r = await h.post("/v1/messages", json=body())
    assert r.status_code == 401
    payload = r.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "authentication_error"
    assert payload["request_id"] == r.headers["request-id"]


async def test_bearer_credentials_accepted(sim_url: str) -> None:
    async with httpx.AsyncClient(base_url=sim_url) as h:
        r = await h.post("/v1/messages", json=body(stream=False),
                         headers={"authorization": "Bearer anything"})
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"{not json", "error parsing the body"),
        (b"[]", "JSON object"),
        (b'{"max_tokens": 10, "messages": [{"role":"user","content":"x"}]}',
         "model: Field required"),
        (b'{"model": "claude-opus-5-5", "messages": [{"role":"user","content":"x"}]}',
         "max_tokens: Field required"),
        (b'{"model": "claude-opus-5-5", "max_tokens": "10", "messages": []}',
         "max_tokens: Input should be a valid integer"),
        (b'{"model": "claude-opus-5-5", "max_tokens": 10}', "messages: Field required"),
        (b'{"model": "claude-opus-5-5", "max_tokens": 10, "messages": "hi"}',
         "messages: Input should be a valid list"),
        (b'{"model": "claude-opus-5-5", "max_tokens": 10, '
         b'"messages": [{"role":"robot","content":"x"}]}', "messages.0.role"),
        (b'{"model": "claude-opus-5-5", "max_tokens": 10, "stream": "yes", '
         b'"messages": [{"role":"user","content":"x"}]}',
         "stream: Input should be a valid boolean"),
    ],
)
async def test_validation_400(http: httpx.AsyncClient, payload: bytes, needle: str) -> None:
    r = await http.post("/v1/messages", content=payload,
                        headers={"content-type": "application/json"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert needle in error["message"]


async def test_temperature_refused_on_new_api_version(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/messages", json=body(temperature=0.5),
                        headers={"anthropic-version": "2026-10-21"})
    assert r.status_code == 400
    assert "temperature" in r.json()["error"]["message"]
    ok = await http.post("/v1/messages", json=body(temperature=0.5, stream=False),
                         headers={"anthropic-version": "2023-06-01"})
    assert ok.status_code == 200


async def test_unknown_model_404_but_any_claude_id_accepted(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/messages", json=body(model="gpt-4o"))
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"
    r = await http.post("/v1/messages", json=body(model="claude-future-9", stream=False))
    assert r.status_code == 200
    assert r.json()["model"] == "claude-future-9"


async def test_unknown_route_and_scenario(http: httpx.AsyncClient) -> None:
    r = await http.get("/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"
    assert r.headers["request-id"].startswith("req_")
    r = await http.post("/v1/messages", json=body(), headers={"x-simulator-scenario": "nope"})
    assert r.status_code == 400
    assert "unknown scenario" in r.json()["error"]["message"]
