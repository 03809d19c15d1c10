"""Decide what a request gets: the scenario, then the content blocks and usage of the reply.

A ``Plan`` is pure data (no bytes, no timing); ``stream.py`` renders it as SSE and
``app.py`` as a JSON ``Message``, so both forms always carry the same content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.simulator import content
from gateway.simulator.wire import json_bytes, new_id

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gateway.simulator.request import MessagesRequest

__all__ = ("ERROR_SCENARIOS", "SCENARIOS", "Block", "Plan", "build_plan", "estimate_tokens",
           "select_scenario")

ERROR_SCENARIOS: dict[str, tuple[int, str, str]] = {
    "error_400": (400, "invalid_request_error", "Simulated invalid request (scenario error_400)."),
    "error_401": (401, "authentication_error", "invalid x-api-key"),
    "error_429": (429, "rate_limit_error",
                  "This request would exceed your organization's rate limit (simulated)."),
    "error_500": (500, "api_error", "Internal server error"),
    "error_529": (529, "overloaded_error", "Overloaded"),
}
STREAM_FAULTS = frozenset({"overloaded", "cut", "reset", "stall"})
SCENARIOS = frozenset({*ERROR_SCENARIOS, *STREAM_FAULTS, "slow_first_token", "text", "tool_use",
                       "thinking", "pause_turn"})
_KEYWORD = re.compile(r"\[sim:([A-Za-z0-9_]+)\]")
# Stand-in tool when ``tool_use`` is forced on a request that offers none.
_FALLBACK_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                     "required": ["location"]},
}


@dataclass(slots=True)
class Block:
    """One content block: its start payload, its delta pieces, and its final form."""

    kind: str
    """``text``, ``thinking`` or ``tool_use``."""
    pieces: list[str]
    final: dict[str, Any]
    tokens: list[int] = field(default_factory=list)
    """Output tokens each piece accounts for (same length as ``pieces``)."""


@dataclass(slots=True)
class Plan:
    """Everything about one reply except its timing."""

    message_id: str
    model: str
    blocks: list[Block]
    stop_reason: str
    usage: dict[str, Any]
    """The full ``Usage`` object with the final ``output_tokens``."""

    @property
    def output_tokens(self) -> int:
        """Total output tokens of the reply."""
        return int(self.usage["output_tokens"])


def select_scenario(headers: Mapping[str, str], last_user_text: str) -> str | None:
    """The scenario named by ``x-simulator-scenario`` or ``[sim:NAME]`` (header wins)."""
    name = headers.get("x-simulator-scenario")
    if name:
        return name.strip().lower()
    match = _KEYWORD.search(last_user_text)
    return match.group(1).lower() if match else None


def estimate_tokens(request: MessagesRequest) -> tuple[int, int]:
    """(total input tokens, tokens of the cacheable ``tools`` + ``system`` prefix).

    About four bytes of JSON per token, like English text; the same for ``count_tokens``.
    """
    prefix = len(json_bytes([request.tools, request.system]))
    body = len(json_bytes(request.messages))
    cacheable = (prefix + 3) // 4 if request.cache_ttl else 0
    return (prefix + body + 3) // 4 + 4, cacheable


def build_plan(request: MessagesRequest, scenario: str | None, output_tokens: int | None,
               cache_seen: set[int], *, tool_input: dict[str, Any] | None = None) -> Plan:
    """Decide the content blocks, stop reason and usage for ``request``.

    ``tool_input`` replaces the input generated from the tool's schema (tests of tool failures).
    """
    seed = content.seed_of(f"{len(request.messages)}|{request.last_user_text}")
    topic = content.topic_of(request.last_user_text)
    wants_tool = bool(request.tools) and not request.tool_results
    if scenario == "tool_use":
        wants_tool = True
    elif scenario in {"text", "pause_turn"}:
        wants_tool = False
    blocks: list[Block] = []
    if request.thinking or scenario == "thinking":
        blocks.append(_thinking_block(request, seed, topic))
    if wants_tool:
        tool = request.tools[0] if request.tools else _FALLBACK_TOOL
        count = output_tokens if output_tokens is not None else 8 + seed % 6
        preamble = f"I'll use the {tool['name']} tool to look into {topic}."
        blocks.append(_text_block(content.text_pieces(seed, count, prefix=preamble)))
        blocks.append(_tool_block(tool, seed, topic, tool_input))
    else:
        count = output_tokens if output_tokens is not None else 30 + seed % 31
        prefix = f"Here is a short answer about {topic}."
        if request.tool_results:
            excerpt = " ".join(" ".join(request.tool_results).split()[:20])
            prefix = f"Based on the tool result ({excerpt}), here is the answer."
        blocks.append(_text_block(content.text_pieces(seed, count, prefix=prefix)))
    stop_reason = "tool_use" if wants_tool else "end_turn"
    # pause_turn: a long server-side turn paused; the client sends the content back to continue.
    if scenario == "pause_turn" and request.messages and request.messages[-1].get("role") == "user":
        stop_reason = "pause_turn"
    blocks, truncated = _fit(blocks, request.max_tokens)
    if truncated:
        stop_reason = "max_tokens"
    return Plan(new_id("msg_"), request.model, blocks, stop_reason,
                _usage(request, blocks, cache_seen))


def _text_block(pieces: list[str]) -> Block:
    return Block("text", pieces, {"type": "text", "text": "".join(pieces)}, [1] * len(pieces))


def _thinking_block(request: MessagesRequest, seed: int, topic: str) -> Block:
    pieces = content.thinking_pieces(seed, topic, 4 + seed % 5)
    text = "".join(pieces)
    tokens = [len(p.split()) for p in pieces]
    if request.thinking_display == "omitted":
        # Omitted display streams only the signature; the tokens are still billed.
        pieces, text, tokens = [], "", []
    final = {"type": "thinking", "thinking": text,
             "signature": content.thinking_signature(text or topic)}
    return Block("thinking", pieces, final, tokens)


def _tool_block(tool: dict[str, Any], seed: int, topic: str, value: dict[str, Any] | None) -> Block:
    if value is None:
        value = content.tool_input(tool.get("input_schema"), seed, topic)
    pieces = content.split_json(value, seed)
    final = {"type": "tool_use", "id": new_id("toolu_"), "name": tool["name"], "input": value}
    return Block("tool_use", pieces, final, [1 if p else 0 for p in pieces])


def _fit(blocks: list[Block], budget: int) -> tuple[list[Block], bool]:
    """Cut the reply at ``max_tokens``: text is shortened, a tool call that won't fit is dropped."""
    kept: list[Block] = []
    for block in blocks:
        need = sum(block.tokens)
        if need <= budget:
            kept.append(block)
            budget -= need
            continue
        if block.kind == "text" and budget > 0:
            block.pieces, block.tokens = block.pieces[:budget], block.tokens[:budget]
            block.final = {"type": "text", "text": "".join(block.pieces)}
            kept.append(block)
        elif block.kind == "thinking" and budget > 0:
            kept.append(block)  # thinking is coarse; keep it and let the budget run out
        return kept, True
    return kept, False


def _usage(request: MessagesRequest, blocks: list[Block], cache_seen: set[int]) -> dict[str, Any]:
    total, cacheable = estimate_tokens(request)
    write_5m = write_1h = read = 0
    if request.cache_ttl and cacheable:
        key = content.seed_of(json_bytes([request.tools, request.system]).decode())
        if key in cache_seen:
            read = cacheable
        else:
            if len(cache_seen) > 10_000:
                cache_seen.clear()  # bounded: a forgotten prefix just gets written again
            cache_seen.add(key)
            write_1h, write_5m = (cacheable, 0) if request.cache_ttl == "1h" else (0, cacheable)
    output = max(1, sum(sum(b.tokens) for b in blocks))
    return {
        "input_tokens": max(1, total - read - write_5m - write_1h),
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m,
                           "ephemeral_1h_input_tokens": write_1h},
        "output_tokens": output,
        "service_tier": "standard",
        "inference_geo": "global",
    }
