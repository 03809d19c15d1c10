"""The official SDK pointed at the gateway works as if it were Anthropic."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import anthropic
import pytest

from tests.support.servers import run_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.servers import ServerProcess

KEY = "csg_sdk_test_key"
TOOLS = [{"name": "get_weather", "description": "Current weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"},
                                                            "unit": {"type": "string", "enum": ["c", "f"]}},
                           "required": ["city"]}}]


@pytest.fixture(scope="module")
def gateway() -> Iterator[ServerProcess]:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    with run_gateway({"GATEWAY_API_KEY_SHA256": digest, "GATEWAY_SIM_TTFT_SECONDS": "0.05",
                      "GATEWAY_SIM_TOKENS_PER_SECOND": "500"}) as server:
        yield server


async def test_tool_turn_streams_and_accumulates(gateway: ServerProcess) -> None:
    """messages.stream() through the gateway: the final message has the text and parsed tool input."""
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=KEY, max_retries=0)
    async with client.messages.stream(
        model="claude-sonnet-5-5", max_tokens=512, tools=TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
    ) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(texts)
    assert final.stop_reason == "tool_use"
    text = [b for b in final.content if b.type == "text"]
    tool = [b for b in final.content if b.type == "tool_use"]
    assert text
    assert text[0].text == "".join(texts)
    assert tool[0].name == "get_weather"
    assert isinstance(tool[0].input, dict)
    assert isinstance(tool[0].input["city"], str)
    assert final.usage.output_tokens > 0
    assert stream.request_id is not None


async def test_x_api_key_style_and_other_endpoints(gateway: ServerProcess) -> None:
    """An older client sending x-api-key: create, count_tokens and the models list all pass through."""
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=None, max_retries=0,
                                      default_headers={"x-api-key": KEY})
    message = await client.messages.create(
        model="claude-haiku-5-5", max_tokens=64, messages=[{"role": "user", "content": "hello"}])
    assert message.content[0].type == "text"
    count = await client.messages.count_tokens(
        model="claude-haiku-5-5", messages=[{"role": "user", "content": "hello there"}])
    assert count.input_tokens > 0
    models = [m.id async for m in client.models.list()]
    assert "claude-opus-5-5" in models
    assert (await client.models.retrieve("claude-opus-5-5")).id == "claude-opus-5-5"


async def test_errors_map_to_the_sdk_exceptions(gateway: ServerProcess) -> None:
    """Wrong key, an upstream 429, and a mid-stream overload raise what the SDK raises against Anthropic."""
    bad = anthropic.AsyncAnthropic(base_url=gateway.url, api_key="nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        await bad.messages.create(model="claude-haiku-5-5", max_tokens=8,
                                  messages=[{"role": "user", "content": "x"}])
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=KEY, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as info:
        await client.messages.create(model="claude-haiku-5-5", max_tokens=8,
                                     messages=[{"role": "user", "content": "x"}],
                                     extra_headers={"x-simulator-scenario": "error_429",
                                                    "x-simulator-retry-after": "60"})
    assert info.value.response.headers["retry-after"] == "60"
    with pytest.raises(anthropic.APIStatusError) as mid:
        async with client.messages.stream(
            model="claude-haiku-5-5", max_tokens=64, messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-simulator-scenario": "overloaded"},
        ) as stream:
            async for _ in stream:
                pass
    assert mid.value.type == "overloaded_error"
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(model="claude-haiku-5-5", max_tokens=8, messages=[])
