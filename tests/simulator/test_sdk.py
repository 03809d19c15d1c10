"""Faithfulness, proven with the official SDK (its parser and accumulator are the judge)."""

from __future__ import annotations

import json

import anthropic
import pytest

from tests.simulator.conftest import MODEL

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string"},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "detailed": {"type": "boolean"},
        },
        "required": ["location", "days", "unit"],
    },
}


async def test_text_stream_final_message(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(
        model=MODEL, max_tokens=1024,
        messages=[{"role": "user", "content": "Tell me about rivers"}],
        extra_headers={"x-simulator-output-tokens": "25"},
    ) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(texts) == 25
    assert final.content[0].type == "text"
    assert final.content[0].text == "".join(texts)
    assert "rivers" in final.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 25
    assert final.usage.input_tokens > 0
    assert final.usage.service_tier == "standard"
    assert final.model == MODEL
    assert final.id.startswith("msg_")
    assert stream.request_id is not None
    assert stream.request_id.startswith("req_")


async def test_text_is_deterministic_per_prompt(client: anthropic.AsyncAnthropic) -> None:
    async def answer(prompt: str) -> str:
        msg = await client.messages.create(
            model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": prompt}])
        assert msg.content[0].type == "text"
        return msg.content[0].text

    assert await answer("same prompt") == await answer("same prompt")
    assert await answer("same prompt") != await answer("another prompt entirely")


async def test_tool_use_turn(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(
        model=MODEL, max_tokens=1024, tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather in Rome?"}],
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use"]
    tool = final.content[1]
    assert tool.type == "tool_use"
    assert tool.id.startswith("toolu_")
    assert tool.name == "get_weather"
    assert isinstance(tool.input, dict)
    assert set(WEATHER["input_schema"]["required"]) <= set(tool.input)  # type: ignore[index]
    assert isinstance(tool.input["location"], str)
    assert 1 <= tool.input["days"] <= 7
    assert tool.input["unit"] == "celsius"


async def test_tool_result_gets_text_answer(client: anthropic.AsyncAnthropic) -> None:
    first = await client.messages.create(
        model=MODEL, max_tokens=1024, tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather in Rome?"}])
    tool = first.content[-1]
    assert tool.type == "tool_use"
    async with client.messages.stream(
        model=MODEL, max_tokens=1024, tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "Weather in Rome?"},
            {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id,
                                          "content": "18C and sunny"}]},
        ],
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert final.content[0].type == "text"
    assert "18C and sunny" in final.content[0].text


async def test_thinking_block_with_signature(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": "Think about prime numbers"}],
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert "thinking" in kinds
    assert "signature" in kinds
    assert final.content[0].type == "thinking"
    assert final.content[0].thinking
    assert final.content[0].signature.startswith("Eq")
    assert final.content[1].type == "text"


async def test_non_streaming_create(client: anthropic.AsyncAnthropic) -> None:
    raw = await client.messages.with_raw_response.create(
        model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"x-simulator-output-tokens": "12"})
    msg = await raw.parse()
    assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["anthropic-organization-id"]
    assert msg.type == "message"
    assert msg.content[0].type == "text"
    assert len(msg.content[0].text.split()) == 12
    assert msg.usage.output_tokens == 12
    assert msg.stop_reason == "end_turn"


async def test_max_tokens_stop_reason(client: anthropic.AsyncAnthropic) -> None:
    msg = await client.messages.create(
        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "Write an essay"}])
    assert msg.stop_reason == "max_tokens"
    assert msg.usage.output_tokens == 5


async def test_count_tokens(client: anthropic.AsyncAnthropic) -> None:
    short = await client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    long = await client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "Hi " * 400}])
    assert 0 < short.input_tokens < long.input_tokens


async def test_count_tokens_matches_message_usage(client: anthropic.AsyncAnthropic) -> None:
    messages = [{"role": "user", "content": "How many tokens is this?"}]
    counted = await client.messages.count_tokens(model=MODEL, messages=messages)  # type: ignore[arg-type]
    msg = await client.messages.create(model=MODEL, max_tokens=64, messages=messages)  # type: ignore[arg-type]
    assert counted.input_tokens == msg.usage.input_tokens


async def test_prompt_caching_writes_then_reads(client: anthropic.AsyncAnthropic) -> None:
    system = [{"type": "text", "text": "You are a careful assistant. " * 50,
               "cache_control": {"type": "ephemeral"}}]
    first = await client.messages.create(
        model=MODEL, max_tokens=32, system=system,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "one"}])
    second = await client.messages.create(
        model=MODEL, max_tokens=32, system=system,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "two"}])
    assert first.usage.cache_creation_input_tokens
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_5m_input_tokens > 0
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens


async def test_models_list_and_retrieve(client: anthropic.AsyncAnthropic) -> None:
    page = await client.models.list(limit=3)
    ids = [m.id for m in page.data]
    assert ids == ["claude-fable-5-2", "claude-mythos-5-2", "claude-haiku-5-5"]
    assert page.has_more
    every = [m.id async for m in client.models.list(limit=5)]
    assert "claude-opus-5-5" in every
    assert "claude-sonnet-4-6" in every
    assert len(every) == len(set(every))
    info = await client.models.retrieve("claude-opus-5-5")
    assert info.display_name == "Claude Opus 5.5"
    assert info.type == "model"
    with pytest.raises(anthropic.NotFoundError) as info:
        await client.models.retrieve("gpt-4o")
    assert info.value.type == "not_found_error"


async def test_beta_query_string_is_ignored(client: anthropic.AsyncAnthropic) -> None:
    msg = await client.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hi"}],
        extra_query={"beta": "true"})
    assert msg.content


async def test_raw_create_stream_events(client: anthropic.AsyncAnthropic) -> None:
    stream = await client.messages.create(
        model=MODEL, max_tokens=1024, stream=True, tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather?"}])
    partial = ""
    types = []
    async for event in stream:
        types.append(event.type)
        if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
            partial += event.delta.partial_json
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    assert set(json.loads(partial)) >= {"location", "days", "unit"}
