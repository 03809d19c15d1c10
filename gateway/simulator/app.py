"""The simulator's ASGI callable: routing, auth, validation, errors and non-streaming replies."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from gateway.simulator import models, wire
from gateway.simulator.config import Pacing, SimulatorConfig
from gateway.simulator.plan import (
    ERROR_SCENARIOS,
    SCENARIOS,
    STREAM_FAULTS,
    Plan,
    build_plan,
    estimate_tokens,
    select_scenario,
)
from gateway.simulator.record import Record
from gateway.simulator.request import MessagesRequest, RequestError, parse_messages_request
from gateway.simulator.stream import DisconnectWatch, SimulatedResetError, run_stream

if TYPE_CHECKING:
    from gateway.simulator.asgi import Receive, Scope, Send

__all__ = ("Simulator", "create_simulator_app")

_MAX_BODY = 32 * 1024 * 1024  # the real Messages API limit


class _ClientGoneError(Exception):
    """The client disconnected while its request body was being read."""


class Simulator:
    """A faithful fake of the Anthropic Messages API as a plain ASGI application.

    Attributes:
        config: The defaults every request starts from.
        record: What was received (``GET /_simulator/stats``).
    """

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.record = Record(config.record_size)
        self._rate = wire.RateHeaders()
        self._org = config.organization_id.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope (HTTP; lifespan is acknowledged)."""
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            return  # websockets are refused by the server when the app does not accept
        path: str = scope["path"]
        method: str = scope["method"]
        request_id = wire.new_id("req_", 22)
        if path.startswith("/_simulator/"):
            await self._control(path, method, request_id, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        entry = self.record.request(request_id, method, path, scope["query_string"], headers)
        try:
            await self._route(scope, path, method, headers=headers, entry=entry, receive=receive,
                              send=send)
        except _ClientGoneError:
            self.record.client_closed(entry, 0)
        except RequestError as exc:
            await self._error(send, entry, exc.status, exc.error_type, exc.message)

    async def _route(self, scope: Scope, path: str, method: str, *, headers: dict[str, str],
                     entry: dict[str, Any], receive: Receive, send: Send) -> None:
        routes = {"/v1/messages": "POST", "/v1/messages/count_tokens": "POST", "/v1/models": "GET"}
        wanted = "GET" if path.startswith("/v1/models/") else routes.get(path)
        if wanted is None:
            raise RequestError(f"Not found: {method} {path}", "not_found_error", 404)
        if method != wanted:
            raise RequestError(f"Method {method} not allowed for {path}", "invalid_request_error",
                               405)
        if self.config.require_api_key and not _has_credentials(headers):
            raise RequestError("x-api-key header is required", "authentication_error", 401)
        if path == "/v1/messages":
            await self._messages(headers, entry, receive, send)
        elif path == "/v1/messages/count_tokens":
            body = await _read_body(receive)
            request = parse_messages_request(body, count_only=True,
                                             api_version=headers.get("anthropic-version"))
            _check_model(request.model)
            await self._json(send, entry, 200, {"input_tokens": estimate_tokens(request)[0]})
        elif path == "/v1/models":
            await self._json(send, entry, 200, _models_page(scope["query_string"]))
        else:
            info = models.find_model(path.removeprefix("/v1/models/"))
            if info is None:
                raise RequestError(f"model: {path.removeprefix('/v1/models/')}",
                                   "not_found_error", 404)
            await self._json(send, entry, 200, info)

    async def _messages(self, headers: dict[str, str], entry: dict[str, Any], receive: Receive,
                        send: Send) -> None:
        body = await _read_body(receive)
        # A fault named by header strikes even before validation; keywords need the body.
        scenario = select_scenario(headers, "")
        if scenario in ERROR_SCENARIOS:
            await self._fail_scenario(send, entry, scenario, headers)
            return
        request = parse_messages_request(body, api_version=headers.get("anthropic-version"))
        entry["model"], entry["stream"] = request.model, request.stream
        scenario = select_scenario(headers, request.last_user_text)
        if scenario is not None and scenario not in SCENARIOS:
            raise RequestError(f"x-simulator-scenario: unknown scenario {scenario!r}; expected "
                               f"one of {', '.join(sorted(SCENARIOS))}")
        if scenario in ERROR_SCENARIOS:
            await self._fail_scenario(send, entry, scenario, headers)
            return
        self.record.scenario(entry, scenario or "default")
        await self._generate(request, scenario, headers=headers, entry=entry, receive=receive,
                             send=send)

    async def _fail_scenario(self, send: Send, entry: dict[str, Any], scenario: str,
                             headers: dict[str, str]) -> None:
        self.record.scenario(entry, scenario)
        status, error_type, message = ERROR_SCENARIOS[scenario]
        await self._error(send, entry, status, error_type, message,
                          retry_after=headers.get("x-simulator-retry-after"))

    async def _generate(self, request: MessagesRequest, scenario: str | None, *,
                        headers: dict[str, str], entry: dict[str, Any], receive: Receive,
                        send: Send) -> None:
        _check_model(request.model)
        try:
            pacing = Pacing.resolve(self.config, headers, scenario or "")
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        tool_input = _tool_input_override(headers.get("x-simulator-tool-input"))
        plan = build_plan(request, scenario, pacing.output_tokens, self.record.cache_seen,
                          tool_input=tool_input)
        fault = scenario if scenario in STREAM_FAULTS else None
        if request.stream:
            self.record.status(entry, 200)
            reply_headers = wire.base_headers(entry["request_id"], self._org,
                                              wire.SSE_CONTENT_TYPE, self._rate)
            await run_stream(send, receive, plan=plan, pacing=pacing, config=self.config,
                             fault=fault, headers=reply_headers, record=self.record, entry=entry)
        else:
            await self._whole_message(send, receive, entry, plan=plan, pacing=pacing, fault=fault)

    async def _whole_message(self, send: Send, receive: Receive, entry: dict[str, Any], *,
                             plan: Plan, pacing: Pacing, fault: str | None) -> None:
        """A non-streaming reply: wait as long as generating it would take, then send it."""
        watch = DisconnectWatch(receive)
        try:
            delay = pacing.ttft + pacing.interval * plan.output_tokens
            if fault == "stall":
                delay = self.config.stall_seconds
            if delay > 0:
                await asyncio.sleep(delay)
            watch.done = True
            if fault == "overloaded":
                await self._error(send, entry, 529, "overloaded_error", "Overloaded")
                return
            content = [dict(b.final, caller={"type": "direct"}) if b.kind == "tool_use"
                       else b.final for b in plan.blocks]
            message = {"id": plan.message_id, "type": "message", "role": "assistant",
                       "model": plan.model, "content": content, "stop_reason": plan.stop_reason,
                       "stop_sequence": None, "stop_details": None, "usage": plan.usage}
            if fault in {"cut", "reset"}:
                await self._truncated(send, entry, wire.json_bytes(message))
                return
            await self._json(send, entry, 200, message)
            self.record.finished(entry, 1, "ok")
        except asyncio.CancelledError:
            if not watch.absorb():
                raise
            self.record.client_closed(entry, 0)
        finally:
            watch.close()

    async def _truncated(self, send: Send, entry: dict[str, Any], body: bytes) -> None:
        """Promise the whole body, send half, then drop the connection."""
        headers = wire.base_headers(entry["request_id"], self._org, wire.JSON_CONTENT_TYPE,
                                    self._rate)
        headers.append((b"content-length", str(len(body)).encode()))
        self.record.status(entry, 200)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body[: len(body) // 2],
                    "more_body": True})
        raise SimulatedResetError(f"simulated connection reset ({entry['request_id']})")

    async def _json(self, send: Send, entry: dict[str, Any] | None, status: int,
                    payload: object, *, extra: list[tuple[bytes, bytes]] | None = None,
                    request_id: str | None = None) -> None:
        body = payload if isinstance(payload, bytes) else wire.json_bytes(payload)
        rid = entry["request_id"] if entry is not None else request_id or wire.new_id("req_")
        headers = wire.base_headers(rid, self._org, wire.JSON_CONTENT_TYPE, self._rate)
        headers.append((b"content-length", str(len(body)).encode()))
        if extra:
            headers.extend(extra)
        if entry is not None:
            self.record.status(entry, status)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _error(self, send: Send, entry: dict[str, Any], status: int, error_type: str,
                     message: str, *, retry_after: str | None = None) -> None:
        extra: list[tuple[bytes, bytes]] = []
        if status in {429, 529}:
            seconds = retry_after if retry_after and retry_after.isdigit() else None
            extra.append((b"retry-after",
                          (seconds or str(self.config.retry_after_seconds)).encode()))
        body = wire.error_body(error_type, message, entry["request_id"])
        await self._json(send, entry, status, body, extra=extra)

    async def _control(self, path: str, method: str, request_id: str, send: Send) -> None:
        if path == "/_simulator/stats" and method == "GET":
            await self._json(send, None, 200, self.record.snapshot(), request_id=request_id)
        elif path == "/_simulator/reset" and method == "POST":
            self.record.reset()
            await self._json(send, None, 200, {"ok": True}, request_id=request_id)
        else:
            body = wire.error_body("not_found_error", f"Not found: {method} {path}", request_id)
            await self._json(send, None, 404, body, request_id=request_id)


def create_simulator_app(config: SimulatorConfig | None = None) -> Simulator:
    """Build the simulator ASGI app (``SimulatorConfig()`` defaults when none is given)."""
    return Simulator(config or SimulatorConfig())


def _has_credentials(headers: dict[str, str]) -> bool:
    if headers.get("x-api-key", "").strip():
        return True
    auth = headers.get("authorization", "").strip()
    scheme, _, token = auth.partition(" ")
    return bool(token.strip()) and scheme.lower() == "bearer"


def _check_model(model: str) -> None:
    if not models.is_known_model(model):
        raise RequestError(f"model: {model}", "not_found_error", 404)


def _models_page(query: bytes) -> dict[str, Any]:
    params = parse_qs(query.decode("latin-1"))
    try:
        limit = int(params.get("limit", ["20"])[0])
        return models.models_page(limit, params.get("after_id", [None])[0],
                                  params.get("before_id", [None])[0])
    except ValueError:
        raise RequestError("limit: Input should be an integer between 1 and 1000") from None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError  # nobody is left to answer
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            raise RequestError("Request exceeds the maximum allowed number of bytes.",
                               "request_too_large", 413)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _tool_input_override(raw: str | None) -> dict[str, Any] | None:
    """``x-simulator-tool-input``: a JSON object used as the tool input (to drive tool failures)."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise RequestError("x-simulator-tool-input: not JSON") from None
    if not isinstance(value, dict):
        raise RequestError("x-simulator-tool-input: expected a JSON object")
    return value
