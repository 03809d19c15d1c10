"""Parse and validate request bodies the way the Messages API does.

Messages follow the real API's ``<field path>: <problem>`` style so gateway tests can assert on
them and people reading a 400 know what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

__all__ = ("MessagesRequest", "RequestError", "parse_messages_request")

_ROLES = frozenset({"user", "assistant", "system"})
# Parameters API version 2026-10-21 refuses even at their default values (reference §4.10).
_REMOVED_IN_2026 = ("temperature", "top_p", "top_k")
_decoder = msgspec.json.Decoder()


class RequestError(Exception):
    """A request the real API would refuse; carries the Anthropic error type and status."""

    def __init__(self, message: str, error_type: str = "invalid_request_error",
                 status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.status = status


@dataclass(slots=True)
class MessagesRequest:
    """The parts of a ``/v1/messages`` body the simulator acts on."""

    model: str
    max_tokens: int
    stream: bool
    messages: list[dict[str, Any]]
    system: object = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    thinking: bool = False
    thinking_display: str = "summarized"
    last_user_text: str = ""
    tool_results: list[str] = field(default_factory=list)
    """Text of the ``tool_result`` blocks in the last user message."""
    cache_ttl: str | None = None
    """``5m`` or ``1h`` when the request marks something with ``cache_control``."""


def _fail(message: str) -> RequestError:
    return RequestError(message)


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [_text_of(b.get("text", "")) for b in content
                 if isinstance(b, dict) and b.get("type") == "text"]
        return " ".join(parts)
    return ""


def parse_messages_request(
    body: bytes, *, count_only: bool = False, api_version: str | None = None
) -> MessagesRequest:
    """Decode and validate a ``/v1/messages`` (or ``count_tokens``) body.

    Args:
        body: The raw request body.
        count_only: ``count_tokens`` rules: ``max_tokens`` and ``stream`` are not required.
        api_version: The ``anthropic-version`` header, for version-specific rules.

    Raises:
        RequestError: The body is not what the API accepts.
    """
    data = _decode(body)
    model = data.get("model")
    if model is None:
        raise _fail("model: Field required")
    if not isinstance(model, str) or not model:
        raise _fail("model: Input should be a valid string")
    max_tokens = data.get("max_tokens", 0 if count_only else None)
    if max_tokens is None:
        raise _fail("max_tokens: Field required")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise _fail("max_tokens: Input should be a valid integer")
    if max_tokens < 1 and not count_only:
        raise _fail("max_tokens: Input should be greater than or equal to 1")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise _fail("stream: Input should be a valid boolean")
    if api_version == "2026-10-21":
        for name in _REMOVED_IN_2026:
            if name in data:
                raise _fail(f"{name}: Extra inputs are not permitted (removed in API version "
                            "2026-10-21)")
    messages = _messages(data.get("messages"))
    request = MessagesRequest(model=model, max_tokens=max_tokens, stream=stream,
                              messages=messages, system=data.get("system"))
    _tools(data, request)
    _thinking(data, request)
    _last_user(messages, request)
    if b'"cache_control"' in body:
        request.cache_ttl = "1h" if b'"1h"' in body else "5m"
    return request


def _decode(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise _fail("Request body is empty; expected a JSON object.")
    try:
        data = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise _fail(f"There was an error parsing the body of your request: {exc}") from None
    if not isinstance(data, dict):
        raise _fail("Request body must be a JSON object.")
    return data


def _messages(messages: object) -> list[dict[str, Any]]:
    if messages is None:
        raise _fail("messages: Field required")
    if not isinstance(messages, list):
        raise _fail("messages: Input should be a valid list")
    if not messages:
        raise _fail("messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _fail(f"messages.{i}: Input should be a valid dictionary")
        if message.get("role") not in _ROLES:
            raise _fail(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if not isinstance(content, str | list):
            raise _fail(f"messages.{i}.content: Input should be a valid string or list of blocks")
        if isinstance(content, list):
            for j, block in enumerate(content):
                if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                    raise _fail(f"messages.{i}.content.{j}.type: Field required")
    if messages[0].get("role") == "system":
        raise _fail("messages.0.role: a system message cannot be the first message")
    return messages


def _tools(data: dict[str, Any], request: MessagesRequest) -> None:
    tools = data.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _fail("tools: Input should be a valid list")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _fail(f"tools.{i}: Input should be a valid dictionary")
        if "type" in tool and tool["type"] not in {"custom", None}:
            continue  # server tools (web_search_…) are declared by type and need no schema
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _fail(f"tools.{i}.name: Field required")
        if not isinstance(tool.get("input_schema"), dict):
            raise _fail(f"tools.{i}.custom.input_schema: Field required")
        request.tools.append(tool)


def _thinking(data: dict[str, Any], request: MessagesRequest) -> None:
    thinking = data.get("thinking")
    if thinking is None:
        return
    if not isinstance(thinking, dict) or not isinstance(thinking.get("type"), str):
        raise _fail("thinking.type: Field required")
    kind = thinking["type"]
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise _fail("thinking.enabled.budget_tokens: Field required")
        if budget < 1024:
            raise _fail("thinking.enabled.budget_tokens: Input should be greater than or equal "
                        "to 1024")
    elif kind not in {"adaptive", "disabled", "between_tools"}:
        raise _fail(f"thinking.type: unknown thinking type {kind!r}")
    request.thinking = kind in {"enabled", "adaptive"}
    display = thinking.get("display")
    if isinstance(display, str):
        request.thinking_display = display


def _last_user(messages: list[dict[str, Any]], request: MessagesRequest) -> None:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        request.last_user_text = _text_of(content)
        if isinstance(content, list):
            for block in content:
                if block.get("type") == "tool_result":
                    request.tool_results.append(_text_of(block.get("content", "")) or "(empty)")
        return
