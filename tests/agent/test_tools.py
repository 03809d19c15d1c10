"""The tool registry: definitions, validation, timeouts and error containment."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.agent.tools import Tool, ToolError, ToolOutcome, ToolRegistry

SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 0}},
    "required": ["n"],
    "additionalProperties": False,
}


async def double(tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"n": tool_input["n"] * 2, "text": "é\n"}


async def echo_text(tool_input: dict[str, Any]) -> str:
    return "x" * int(tool_input["n"])


async def slow(tool_input: dict[str, Any]) -> str:
    await asyncio.sleep(10)
    return "never"


async def crash(tool_input: dict[str, Any]) -> str:
    raise RuntimeError("secret /etc/path and a\nstack")


async def refuse(tool_input: dict[str, Any]) -> str:
    raise ToolError("cannot do that\nbecause reasons")


async def inner_timeout(tool_input: dict[str, Any]) -> str:
    raise TimeoutError


async def not_json(tool_input: dict[str, Any]) -> object:
    return {"x": object()}


@pytest.fixture
def registry() -> ToolRegistry:
    reg = ToolRegistry(max_output_chars=50)
    for name, handler in [("double", double), ("echo_text", echo_text), ("crash", crash),
                          ("refuse", refuse), ("inner_timeout", inner_timeout),
                          ("not_json", not_json)]:
        reg.register(Tool(name=name, description=f"{name} tool", input_schema=SCHEMA,
                          handler=handler))
    reg.register(Tool(name="slow", description="slow", input_schema=SCHEMA, handler=slow,
                      timeout_seconds=0.05))
    return reg


def test_definitions_in_anthropic_format(registry: ToolRegistry) -> None:
    defs = registry.definitions(["slow", "double"])
    assert defs == [
        {"name": "slow", "description": "slow", "input_schema": SCHEMA},
        {"name": "double", "description": "double tool", "input_schema": SCHEMA},
    ]
    assert [d["name"] for d in registry.definitions()] == list(registry.names)
    assert registry.names[0] == "double"
    with pytest.raises(KeyError):
        registry.definitions(["nope"])
    assert registry.get("double") is not None
    assert registry.get("nope") is None


def test_register_rejects_bad_tools(registry: ToolRegistry) -> None:
    with pytest.raises(ValueError, match="already"):
        registry.register(Tool(name="double", description="", input_schema=SCHEMA, handler=double))
    with pytest.raises(ValueError, match="name"):
        registry.register(Tool(name="has space", description="", input_schema=SCHEMA,
                               handler=double))
    with pytest.raises(Exception, match="not valid"):
        registry.register(Tool(name="bad_schema", description="",
                               input_schema={"type": "nonsense"}, handler=double))


async def test_success_dumps_compact_json(registry: ToolRegistry) -> None:
    outcome = await registry.execute("double", {"n": 21})
    assert not outcome.is_error
    assert outcome.error is None
    assert outcome.output == '{"n":42,"text":"é\\n"}'
    assert json.loads(outcome.content) == {"n": 42, "text": "é\n"}
    assert outcome.duration_ms >= 0
    data = outcome.event_data()
    assert data["output"] == outcome.output
    assert data["is_error"] is False
    assert "error" not in data


async def test_string_output_is_kept_and_truncated(registry: ToolRegistry) -> None:
    assert (await registry.execute("echo_text", {"n": 3})).output == "xxx"
    long = await registry.execute("echo_text", {"n": 500})
    assert long.output is not None
    assert long.output.startswith("x" * 50)
    assert "truncated" in long.output
    assert len(long.output) < 100


@pytest.mark.parametrize(
    ("name", "tool_input", "expected"),
    [
        ("nope", {"n": 1}, "unknown tool: nope"),
        ("double", {"n": "1"}, "invalid input at n:"),
        ("double", {"n": -1}, "invalid input at n:"),
        ("double", {}, "invalid input at input:"),
        ("double", {"n": 1, "x": 2}, "invalid input"),
        ("double", [1], "invalid input: expected a JSON object"),
        ("slow", {"n": 1}, "tool timed out"),
        ("crash", {"n": 1}, "tool failed (RuntimeError)"),
        ("refuse", {"n": 1}, "cannot do that because reasons"),
        ("inner_timeout", {"n": 1}, "tool failed (an internal call timed out)"),
        ("not_json", {"n": 1}, "tool returned a result that is not JSON"),
    ],
)
async def test_failures_become_error_outcomes(
    registry: ToolRegistry, name: str, tool_input: Any, expected: str
) -> None:
    outcome = await registry.execute(name, tool_input)
    assert outcome.is_error
    assert outcome.output is None
    assert outcome.error is not None
    assert outcome.error.startswith(expected)
    assert "\n" not in outcome.error
    assert "secret" not in outcome.error
    assert "Traceback" not in outcome.error
    assert outcome.content == outcome.error
    assert outcome.event_data() == {"error": outcome.error, "is_error": True,
                                    "duration_ms": round(outcome.duration_ms, 3)}


async def test_timeout_is_measured(registry: ToolRegistry) -> None:
    outcome = await registry.execute("slow", {"n": 1})
    assert 40 <= outcome.duration_ms < 2000


async def test_cancellation_propagates(registry: ToolRegistry) -> None:
    registry.register(Tool(name="slower", description="", input_schema=SCHEMA, handler=slow))
    task = asyncio.create_task(registry.execute("slower", {"n": 1}))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_close_runs_callbacks_once() -> None:
    reg = ToolRegistry()
    calls: list[int] = []
    reg.on_close(lambda: calls.append(1))
    reg.close()
    reg.close()
    assert calls == [1]


def test_outcome_is_frozen() -> None:
    outcome = ToolOutcome(output="x", error=None, is_error=False, duration_ms=1.0)
    with pytest.raises(AttributeError):
        outcome.output = "y"  # type: ignore[misc]
