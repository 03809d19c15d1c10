"""``/v1/agent/stream``: start, resume and cancel agent streams.

The response of a start and of a resume is the same ``AgentStreamResponse``: it reads the
stream's events from the resume store after a given ``seq`` and writes them as they come, with
``retry:`` first and ``: keepalive`` comments whenever nothing was written for
``GATEWAY_KEEPALIVE_SECONDS`` (while Claude thinks, or a tool runs). Only the key that started a
stream may resume or cancel it.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from typing import TYPE_CHECKING, Annotated, Any, cast

import msgspec
from litestar import Request, get, post

from gateway.agent.events import KEEPALIVE, encode_retry, parse_event_id
from gateway.errors import RequestRejected
from gateway.proxy.disconnect import receive_disconnect
from gateway.proxy.guard import admit, check_policy
from gateway.proxy.messages import request_id
from gateway.proxy.request_shapes import InputMessage
from gateway.proxy.routes import authenticate
from gateway.proxy.upstream import forward_headers
from gateway.state import RAW_SEND, GatewayState, state_of

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = ("agent_routes",)

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class AgentRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Start an agent stream: a ``prompt`` or a full ``messages`` list."""

    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)] | None = None
    messages: list[InputMessage] | None = None
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    system: str | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=128_000)] = 4096
    max_turns: Annotated[int, msgspec.Meta(ge=1, le=50)] | None = None
    thinking: bool = False
    tools: list[str] | None = None


_MANUAL_THINKING = re.compile(r"^claude-(3|(opus|sonnet|haiku)-4-[015](-|$))")


def thinking_config(model: str, max_tokens: int) -> dict[str, Any]:
    """The ``thinking`` parameter a model takes: a token budget up to the 4.5 family, else adaptive.

    Newer models reject ``enabled`` with a budget (400) and decide the depth themselves.
    """
    if _MANUAL_THINKING.match(model):
        return {"type": "enabled", "budget_tokens": max(1024, min(max_tokens // 2, 16_000))}
    return {"type": "adaptive", "display": "summarized"}


def _anthropic_request(state: GatewayState, data: AgentRequest) -> dict[str, Any]:
    if (data.prompt is None) == (data.messages is None):
        raise RequestRejected(400, "exactly one of prompt or messages is required")
    assert state.agent.tools is not None
    messages: list[dict[str, Any]] = (
        [{"role": "user", "content": data.prompt}]
        if data.prompt is not None
        else [msgspec.to_builtins(m) for m in data.messages or []]
    )
    if not messages:
        raise RequestRejected(400, "messages: at least one message is required")
    unknown = sorted(set(data.tools or ()) - set(state.agent.tools.names))
    if unknown:
        raise RequestRejected(400, f"tools: unknown tool(s) {', '.join(unknown)}")
    body: dict[str, Any] = {
        "model": data.model or state.agent.default_model,
        "max_tokens": data.max_tokens,
        "messages": messages,
    }
    tools = state.agent.tools.definitions(data.tools)  # None: every tool; []: none
    if tools:
        body["tools"] = tools
    if data.system:
        body["system"] = data.system
    if data.thinking:
        body["thinking"] = thinking_config(body["model"], data.max_tokens)
        body["max_tokens"] = max(data.max_tokens, body["thinking"].get("budget_tokens", 0) + 1024)
    check_policy(state.settings, body["model"], body["max_tokens"])
    return body


class AgentStreamResponse:
    """Write a stream's events from the store, after ``after_seq``, until ``stream_end``."""

    __slots__ = ("after_seq", "state", "stream_id")

    def __init__(self, state: GatewayState, stream_id: str, after_seq: int) -> None:
        self.state = state
        self.stream_id = stream_id
        self.after_seq = after_seq

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run as an ASGI app."""
        runner = self.state.agent
        assert runner.store is not None
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_HEADERS, (b"x-agent-stream-id", self.stream_id.encode())],
            }
        )
        body_send = cast("Send", scope.get(RAW_SEND, send))
        await body_send({"type": "http.response.body", "body": encode_retry(3000), "more_body": True})
        runner.attach(self.stream_id)
        written = [0]

        async def pump() -> None:
            assert runner.store is not None
            async for _, payload in runner.store.read_from(self.stream_id, self.after_seq):
                await body_send({"type": "http.response.body", "body": payload, "more_body": True})
                written[0] += 1

        async def keepalive() -> None:
            seen = -1
            while True:
                await asyncio.sleep(self.state.settings.keepalive_seconds)
                if written[0] == seen:
                    await body_send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                seen = written[0]

        loop = asyncio.get_running_loop()
        tasks = (
            loop.create_task(pump()),
            loop.create_task(receive_disconnect(receive)),
            loop.create_task(keepalive()),
        )
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            runner.detach(self.stream_id)
        if tasks[0].done():
            await send({"type": "http.response.body", "body": b"", "more_body": False})


@post("/v1/agent/stream", before_request=authenticate, status_code=200, summary="Start an agent stream")
async def start_stream(request: Request[Any, Any, Any], data: AgentRequest) -> ASGIApp:
    """Run the tool loop server-side and stream the normalized event timeline."""
    state = state_of(request)
    received = request.scope["state"]["received"]
    body = _anthropic_request(state, data)
    key_id = str(request.scope["state"]["key_id"])
    admission = await admit(state.limiter, key_id, stream=True, draining=state.hub.draining)
    max_turns = data.max_turns or state.settings.agent_max_turns
    try:
        run = await state.agent.launch(
            key_id,
            body,
            forward_headers(
                request.scope["headers"],
                simulator=state.settings.local_upstream,
                request_id=request_id(request.scope),
            ),
            max_turns=max_turns,
            received=received,
            release=admission.release,
        )
    except BaseException:
        await admission.release()
        raise
    return AgentStreamResponse(state, run.stream_id, -1)


async def _owned(request: Request[Any, Any, Any], stream_id: str) -> GatewayState:
    state = state_of(request)
    assert state.agent.store is not None
    owner = await state.agent.store.owner(stream_id)
    if owner is None:
        raise RequestRejected(404, f"agent stream {stream_id!r} not found (or expired)")
    if not hmac.compare_digest(owner, str(request.scope["state"]["key_id"])):
        raise RequestRejected(403, "this stream belongs to another key", reason="auth")
    return state


@get("/v1/agent/stream/{stream_id:str}", before_request=authenticate, summary="Resume an agent stream")
async def resume_stream(request: Request[Any, Any, Any], stream_id: str) -> ASGIApp:
    """Replay the events after ``Last-Event-ID`` (all, without it), then continue live."""
    state = await _owned(request, stream_id)
    parsed = parse_event_id(request.headers.get("last-event-id"))
    after = parsed[1] if parsed is not None and parsed[0] == stream_id else -1
    return AgentStreamResponse(state, stream_id, after)


@post(
    "/v1/agent/stream/{stream_id:str}/cancel",
    before_request=authenticate,
    status_code=200,
    summary="Cancel an agent stream",
)
async def cancel_stream(request: Request[Any, Any, Any], stream_id: str) -> dict[str, Any]:
    """Stop the stream and its upstream call now."""
    state = await _owned(request, stream_id)
    cancelled = await state.agent.cancel(stream_id)
    return {"stream_id": stream_id, "cancelled": cancelled, "at": time.time()}


agent_routes = [start_stream, resume_stream, cancel_stream]
