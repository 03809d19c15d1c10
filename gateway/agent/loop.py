"""The server-side tool loop: stream a turn from Claude, run the tools it asks for, go on.

One ``AgentLoop`` runs one agent stream. Each turn goes through the same ``Upstream`` and the
same per-call telemetry (``chat {model}`` span, tokens, cost, ``generate`` tool phase) as
``/v1/messages``; the loop adds ``execute_tool {name}`` spans and the ``server`` tool phase.
Unlike the relay, the loop has to understand every event, so here each one is decoded: the
agent timeline is a translation of the stream, not a copy of it.

Turn logic (``anthropic-streaming-api.md`` §5): ``tool_use`` → run every tool block, send the
results back as one user message, next turn; ``pause_turn`` → send the assistant content back
as is, next turn; anything else ends the stream. ``max_turns`` bounds the loop.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.errors import GatewayError, UpstreamStatusError
from gateway.proxy.sse import SSEDecoder
from gateway.telemetry.metrics import ROUTE_AGENT
from gateway.telemetry.stream import outcome_for_error

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from opentelemetry.trace import Tracer

    from gateway.agent.tools import ToolRegistry
    from gateway.proxy.connection import Response
    from gateway.proxy.upstream import Upstream
    from gateway.telemetry.stream import StreamRecord, Telemetry

__all__ = ("AgentLoop", "TurnFailed")

_RETRYABLE = frozenset({"rate_limit_error", "overloaded_error", "api_error", "timeout_error"})


class TurnFailed(Exception):
    """A turn ended in an error; ``data`` is the ``error`` event's payload."""

    def __init__(self, data: dict[str, Any], outcome: str) -> None:
        super().__init__(data["message"])
        self.data = data
        self.outcome = outcome


def error_data(error_type: str, message: str, retry_after: float | None = None) -> dict[str, Any]:
    """The ``error`` event payload."""
    return {
        "type": error_type,
        "message": message,
        "retryable": error_type in _RETRYABLE,
        "retry_after_ms": None if retry_after is None else int(retry_after * 1000),
    }


class AgentLoop:
    """Runs the turns of one agent stream, emitting contract events through ``emit``.

    Args:
        upstream: The shared upstream client.
        telemetry: The shared telemetry handles.
        tools: Registry of the tools offered to Claude.
        emit: Async callback ``(event, data)`` storing and delivering one event.
        request: The Anthropic request body of the first turn (without ``stream``).
        headers: The client's headers the upstream may see (``forward_headers``).
    """

    def __init__(
        self,
        upstream: Upstream,
        telemetry: Telemetry,
        tools: ToolRegistry,
        emit: Callable[[str, dict[str, Any]], Awaitable[None]],
        request: dict[str, Any],
        headers: list[tuple[bytes, bytes]],
        *,
        stream_id: str,
        received: float,
    ) -> None:
        self.upstream = upstream
        self.telemetry = telemetry
        self.tools = tools
        self.emit = emit
        self.request = request
        self.headers = headers
        self.stream_id = stream_id
        self.received = received
        self.first_token_at: float | None = None
        self.usage = {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "cost_usd": 0.0,
        }
        self.tool_names: list[str] = []
        self.stop_reason: str | None = None

    async def run(self, max_turns: int) -> str:
        """Run turns until Claude is done or ``max_turns``; return the final stop reason.

        Raises:
            TurnFailed: A turn failed; the caller emits the ``error`` event.
        """
        messages: list[dict[str, Any]] = list(self.request["messages"])
        for turn in range(1, max_turns + 1):
            content, stop_reason = await self._turn(turn, messages)
            self.stop_reason = stop_reason
            await self.emit("turn", {"turn": turn, "stop_reason": stop_reason})
            await self.emit("usage", dict(self.usage))
            messages.append({"role": "assistant", "content": content})
            if stop_reason == "tool_use":
                results = [
                    await self._run_tool(block) for block in content if block.get("type") == "tool_use"
                ]
                messages.append({"role": "user", "content": results})
            elif stop_reason != "pause_turn":
                return stop_reason or "end_turn"
        self.stop_reason = "max_turns"
        return "max_turns"

    async def _turn(
        self, turn: int, messages: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], str | None]:
        body = {**self.request, "messages": messages, "stream": True}
        record = self.telemetry.begin(
            ROUTE_AGENT,
            str(body["model"]),
            stream=True,
            max_tokens=body.get("max_tokens"),
            received=time.perf_counter(),
            stream_id=self.stream_id,
            agent_turn=True,
            messages=messages,
        )
        record.upstream_sent = time.perf_counter()
        try:
            resp = await self.upstream.send(
                "POST",
                "/v1/messages",
                headers=self.headers,
                body=json.dumps(body).encode(),
                trace_headers=record.trace_headers(),
            )
        except GatewayError as exc:
            await record.finish(outcome_for_error(exc.type), exc.type)
            retry_after = None
            if isinstance(exc, UpstreamStatusError):
                ra = dict(exc.headers).get(b"retry-after")
                retry_after = float(ra) if ra and ra.decode().replace(".", "", 1).isdigit() else None
                message = _upstream_message(exc.body) or exc.message
            else:
                message = exc.message
            raise TurnFailed(
                error_data(exc.type, message, retry_after), outcome_for_error(exc.type)
            ) from None
        record.status = resp.status
        record.request_id = resp.header(b"request-id")
        outcome: str = "gateway_error"
        error_type: str | None = "internal"
        try:
            result = await self._consume(turn, resp, record)
            outcome, error_type = "ok", None
            return result
        except TurnFailed as exc:
            outcome, error_type = exc.outcome, exc.data["type"]
            raise
        except TimeoutError:
            outcome, error_type = "timeout", "upstream_idle_timeout"
            raise TurnFailed(
                error_data("timeout_error", "The upstream sent nothing for too long."), "timeout"
            ) from None
        except OSError:
            outcome, error_type = "upstream_error", "upstream_reset"
            raise TurnFailed(
                error_data("api_error", "The upstream connection was lost mid-stream."), outcome
            ) from None
        except BaseException:
            outcome, error_type = "client_disconnect", None
            raise
        finally:
            resp.close()
            await record.finish(outcome, error_type)
            for key, value in record.summary().items():
                self.usage[key] += value

    async def _consume(  # noqa: PLR0912 - one branch per event and delta type
        self, turn: int, resp: Response, record: StreamRecord
    ) -> tuple[list[dict[str, Any]], str | None]:
        decoder = SSEDecoder()
        blocks: dict[int, dict[str, Any]] = {}
        partial_json: dict[int, list[str]] = {}
        stop_reason: str | None = None
        while chunk := await resp.next_chunk():
            record.observer.feed(chunk)
            for ev in decoder.feed(chunk):
                if ev.event == "ping":
                    continue
                payload = json.loads(ev.data)
                kind = ev.event
                if kind == "content_block_delta":
                    index, delta = payload["index"], payload["delta"]
                    dtype = delta.get("type")
                    block = blocks[index]
                    if dtype == "text_delta":
                        block["text"] += delta["text"]
                        await self._first("token", {"text": delta["text"]})
                    elif dtype == "thinking_delta":
                        block["thinking"] += delta["thinking"]
                        await self._first("thinking", {"text": delta["thinking"]})
                    elif dtype == "signature_delta":
                        block["signature"] = block.get("signature", "") + delta["signature"]
                    elif dtype == "input_json_delta":
                        partial_json.setdefault(index, []).append(delta["partial_json"])
                        if delta["partial_json"]:
                            await self._first(
                                "tool_input", {"tool_id": block.get("id"), "partial": delta["partial_json"]}
                            )
                elif kind == "content_block_start":
                    block = _param_block(payload["content_block"])
                    blocks[payload["index"]] = block
                    if block.get("type") == "tool_use":
                        self.tool_names.append(str(block.get("name")))
                        await self.emit(
                            "tool_start",
                            {"tool_id": block.get("id"), "tool_name": block.get("name"), "turn": turn},
                        )
                elif kind == "content_block_stop":
                    index = payload["index"]
                    if index in partial_json and index in blocks:
                        raw = "".join(partial_json.pop(index))
                        blocks[index]["input"] = json.loads(raw) if raw.strip() else {}
                    await self.emit("block_stop", {"index": index})
                elif kind == "message_delta":
                    stop_reason = payload.get("delta", {}).get("stop_reason") or stop_reason
                elif kind == "error":
                    err = payload.get("error") or {}
                    etype = str(err.get("type", "api_error"))
                    raise TurnFailed(error_data(etype, str(err.get("message", ""))), outcome_for_error(etype))
                elif kind == "message_stop":
                    return [blocks[i] for i in sorted(blocks)], stop_reason
        raise TurnFailed(
            error_data("api_error", "The upstream ended the stream before message_stop."), "upstream_error"
        )

    async def _first(self, event: str, data: dict[str, Any]) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        await self.emit(event, data)

    async def _run_tool(self, block: dict[str, Any]) -> dict[str, Any]:
        name, tool_id, tool_input = str(block.get("name")), block.get("id"), block.get("input") or {}
        await self.emit("tool_executing", {"tool_id": tool_id, "tool_name": name, "input": tool_input})
        tracer: Tracer | None = self.telemetry.tracer
        span = (
            tracer.start_span(
                f"execute_tool {name}",
                kind=SpanKind.INTERNAL,
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": name,
                    "gen_ai.tool.call.id": str(tool_id),
                    "gen_ai.tool.type": "function",
                },
            )
            if tracer is not None
            else None
        )
        outcome = None
        try:
            with trace.use_span(span, end_on_exit=False) if span is not None else _nullcontext():
                outcome = await self.tools.execute(name, tool_input)
        finally:
            if span is not None:
                if outcome is None or outcome.is_error:
                    span.set_status(Status(StatusCode.ERROR, "tool failed"))
                    span.set_attribute("error.type", "tool_error")
                span.end()
        metrics = self.telemetry.metrics
        if metrics is not None:
            metrics.record_tool(
                name if self.tools.get(name) else "other", "server", outcome.duration_ms / 1000
            )
        await self.emit("tool_result", {"tool_id": tool_id, "tool_name": name, **outcome.event_data()})
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id, "content": outcome.content}
        if outcome.is_error:
            result["is_error"] = True
        return result


class _nullcontext:  # noqa: N801 - mirrors contextlib.nullcontext, typed for use_span
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def _param_block(start: dict[str, Any]) -> dict[str, Any]:
    """The block as it goes back in the next request: only the fields a block param has.

    Response blocks carry extra fields (``citations: null``, a tool call's ``caller``) that the
    request schema does not take; thinking blocks must go back with their text and signature.
    """
    kind = start.get("type")
    if kind == "text":
        return {"type": "text", "text": start.get("text") or ""}
    if kind == "thinking":
        return {
            "type": "thinking",
            "thinking": start.get("thinking") or "",
            "signature": start.get("signature") or "",
        }
    if kind == "tool_use":
        return {"type": "tool_use", "id": start.get("id"), "name": start.get("name"), "input": {}}
    return dict(start)  # redacted_thinking, server tool blocks: back unchanged


def _upstream_message(body: bytes) -> str | None:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return None
