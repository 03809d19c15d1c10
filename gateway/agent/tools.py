"""A small typed registry of async tools the agent loop runs server-side.

A ``Tool`` pairs an Anthropic tool definition (name, description, JSON schema) with an async
handler. ``ToolRegistry.execute`` is the one way the loop runs a tool, and it never raises
for tool trouble: bad input, an unknown name, a timeout or any exception become a
``ToolOutcome`` with ``is_error=True`` and a short, safe message (no stack trace, no
exception text except from ``ToolError``, whose message is written for the model to read).
Cancellation is not tool trouble: ``asyncio.CancelledError`` propagates so a cancelled
stream stops at once.

Input is validated with ``jsonschema``; each tool's validator is built once at
``register`` time, so a call costs one ``iter_errors`` walk over a small dict.

A timeout cancels the handler's coroutine. Work a handler pushed to a thread
(``asyncio.to_thread``) cannot be interrupted and finishes in the background, so thread
work must itself be bounded (the demo tools' SQL is).

Public API:
    * ``Tool(name, description, input_schema, handler, timeout_seconds=10.0)``;
      ``Tool.definition() -> dict``.
    * ``ToolOutcome(output, error, is_error, duration_ms)``; ``.content`` is the text for
      the ``tool_result`` block; ``.event_data()`` the contract fields of the event.
    * ``ToolError(message)`` — raise it in a handler to report a readable error.
    * ``ToolRegistry(max_output_chars=65536)``: ``register``, ``get``, ``names``,
      ``definitions(names=None)``, ``async execute(name, input)``, ``on_close``, ``close``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    ToolHandler = Callable[[dict[str, Any]], Awaitable[Any]]

__all__ = ("Tool", "ToolError", "ToolOutcome", "ToolRegistry")

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what the Messages API accepts as a tool name
_MAX_ERROR_CHARS = 300


class ToolError(Exception):
    """A handler's readable failure; its message goes to the model and the client as is."""


@dataclass(frozen=True, slots=True)
class Tool:
    """One server-side tool.

    Attributes:
        name: Tool name as the model sees it (``[A-Za-z0-9_-]{1,64}``).
        description: What the tool does and when to use it, for the model.
        input_schema: JSON schema (an object schema) of the handler's input.
        handler: ``async (input: dict) -> JSON-serialisable value or str``.
        timeout_seconds: Wall-clock budget of one call.
    """

    name: str
    description: str
    input_schema: Mapping[str, Any]
    handler: ToolHandler
    timeout_seconds: float = 10.0

    def definition(self) -> dict[str, Any]:
        """Return the tool in Anthropic's ``tools`` format."""
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": dict(self.input_schema),
        }


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What one tool call produced.

    Attributes:
        output: The result as text (JSON for structured results) when the call succeeded.
        error: A short, safe message when it did not.
        is_error: True when ``error`` is set.
        duration_ms: Wall-clock time of validation plus execution.
    """

    output: str | None
    error: str | None
    is_error: bool
    duration_ms: float

    @property
    def content(self) -> str:
        """The text for the ``tool_result`` block sent back to the model."""
        return (self.error if self.is_error else self.output) or ""

    def event_data(self) -> dict[str, Any]:
        """The outcome's fields of the ``tool_result`` event (``output`` or ``error``)."""
        key, value = ("error", self.error) if self.is_error else ("output", self.output)
        return {key: value, "is_error": self.is_error, "duration_ms": round(self.duration_ms, 3)}


class ToolRegistry:
    """Tools by name, in registration order (the order ``definitions`` offers them in)."""

    def __init__(self, *, max_output_chars: int = 65_536) -> None:
        """Create an empty registry.

        Args:
            max_output_chars: Longer outputs are cut to this length, with a marker, so one
                tool cannot flood the model's context or the event stream.
        """
        self._tools: dict[str, tuple[Tool, Draft202012Validator]] = {}
        self._closers: list[Callable[[], None]] = []
        self._max_output = max_output_chars

    def register(self, tool: Tool) -> None:
        """Add a tool.

        Raises:
            ValueError: The name is malformed or taken, or the schema is not a valid schema.
        """
        if not _NAME.fullmatch(tool.name):
            raise ValueError(f"tool name must match {_NAME.pattern}: {tool.name!r}")
        if tool.name in self._tools:
            raise ValueError(f"tool already registered: {tool.name}")
        Draft202012Validator.check_schema(tool.input_schema)
        self._tools[tool.name] = (tool, Draft202012Validator(tool.input_schema))

    def get(self, name: str) -> Tool | None:
        """Return the tool called ``name``, or ``None``."""
        entry = self._tools.get(name)
        return entry[0] if entry else None

    @property
    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._tools)

    def definitions(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Return tool definitions in Anthropic format.

        Args:
            names: Tools to offer, in this order; all of them when ``None``.

        Raises:
            KeyError: A name is not registered (check with ``get`` to answer a 400).
        """
        chosen = self._tools if names is None else names
        return [self._tools[name][0].definition() for name in chosen]

    async def execute(self, name: str, tool_input: Any) -> ToolOutcome:  # noqa: ANN401 - model JSON
        """Validate ``tool_input``, run the tool under its timeout and report the outcome.

        Never raises for a tool's failure; only cancellation propagates.
        """
        started = time.perf_counter()
        output: str | None = None
        error: str | None = None
        try:
            output = await self._run(name, tool_input)
        except ToolError as exc:
            error = _short(str(exc) or "tool failed")
        except TimeoutError:
            error = "tool timed out"
        except Exception as exc:  # noqa: BLE001 - any tool bug becomes an error result
            error = f"tool failed ({type(exc).__name__})"
        elapsed = (time.perf_counter() - started) * 1000.0
        return ToolOutcome(output, error, error is not None, elapsed)

    async def _run(self, name: str, tool_input: Any) -> str:  # noqa: ANN401 - model JSON
        entry = self._tools.get(name)
        if entry is None:
            raise ToolError(f"unknown tool: {_short(name, 64)}")
        tool, validator = entry
        if not isinstance(tool_input, dict):
            raise ToolError("invalid input: expected a JSON object")
        problem = best_match(validator.iter_errors(tool_input))
        if problem is not None:
            where = "/".join(str(p) for p in problem.absolute_path) or "input"
            raise ToolError(f"invalid input at {where}: {problem.message}")
        async with asyncio.timeout(tool.timeout_seconds) as scope:
            try:
                result = await tool.handler(tool_input)
            except TimeoutError:
                if scope.expired():
                    raise
                raise ToolError("tool failed (an internal call timed out)") from None
        text = result if isinstance(result, str) else _dump(result)
        if len(text) > self._max_output:
            text = text[: self._max_output] + f"… [truncated at {self._max_output} chars]"
        return text

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` at ``close`` (tools release databases and the like this way)."""
        self._closers.append(callback)

    def close(self) -> None:
        """Release what the tools hold; call once from the app's lifespan."""
        while self._closers:
            self._closers.pop()()


def _dump(result: Any) -> str:  # noqa: ANN401 - any JSON value
    try:
        return json.dumps(result, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        raise ToolError("tool returned a result that is not JSON") from None


def _short(text: str, limit: int = _MAX_ERROR_CHARS) -> str:
    text = " ".join(text.split())  # one line: error text ends up in logs and events
    return text if len(text) <= limit else text[: limit - 1] + "…"
