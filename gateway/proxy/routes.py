"""The Anthropic-compatible routes: ``/v1/messages`` (stream and not), count_tokens, models.

A streaming request is checked (auth guard, body, policy, limits), sent upstream with retries,
and once the upstream answered 2xx the handler returns a ``StreamRelay``: a raw ASGI app that
writes the upstream's bytes unchanged. Errors before that point raise ``GatewayError``, turned
into Anthropic-shaped JSON by the handlers in ``app.py``; after it, into ``event: error``.
"""

from __future__ import annotations

import time
from random import getrandbits
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec
from litestar import Request, get, post
from litestar.response.base import ASGIResponse

from gateway.errors import GatewayError
from gateway.proxy.guard import (
    CountTokensRequest,
    MessagesRequest,
    admit,
    check_key,
    check_policy,
)
from gateway.proxy.relay import StreamRelay
from gateway.proxy.upstream import forward_headers, response_headers
from gateway.state import GatewayState, state_of
from gateway.telemetry.metrics import ROUTE_MESSAGES
from gateway.telemetry.stream import outcome_for_error
from gateway.telemetry.tool_latency import extract_tool_result_ids

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Scope

__all__ = ("authenticate", "open_messages", "proxy_routes", "request_id")


def request_id(scope: Scope) -> str:
    """The gateway's id for this request: the client's (or nginx's) ``x-request-id``, or a new one."""
    state = scope.setdefault("state", {})
    rid = state.get("request_id")
    if rid is None:
        # The first value, looked up in C (a dict of the pairs, last pair first).
        incoming = dict(reversed(list(scope["headers"]))).get(b"x-request-id", b"").decode("latin-1")
        # 128 random bits as 32 hex digits, like uuid4().hex, without its urandom system call
        # and UUID object: an id to correlate lines and spans by, not a secret.
        rid = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else f"{getrandbits(128):032x}"
        state["request_id"] = rid
    return str(rid)


async def authenticate(request: Request[Any, Any, Any]) -> None:
    """``before_request`` hook: authenticate before the body is even read.

    A hook rather than a guard: Litestar copies the route handler for every guard call.
    """
    state = state_of(request)
    request.scope.setdefault("state", {})["received"] = time.perf_counter()
    request.scope["state"]["key_id"] = check_key(request, state.auth)


def _key_id(request: Request[Any, Any, Any]) -> str:
    return str(request.scope["state"]["key_id"])


async def _observe_client_tools(state: GatewayState, body: bytes) -> None:
    """Time the client's tool runs: a ``tool_result`` here answers a ``tool_use`` we relayed."""
    metrics = state.telemetry.metrics
    if metrics is None:
        return
    ids = extract_tool_result_ids(body)
    if not ids:
        return
    try:
        now = time.time()
        for name, started in await state.telemetry.correlation.take_many(ids):
            metrics.record_tool(name, "client", now - started)
    except Exception:  # noqa: BLE001 - telemetry never fails a request
        metrics.telemetry_errors.labels("tool_correlation").inc()


@post("/v1/messages", before_request=authenticate, status_code=200, summary="Create a Message")
async def create_message(request: Request[Any, Any, Any], data: MessagesRequest) -> ASGIApp:
    """Anthropic Messages API; streams are relayed byte for byte."""
    state = state_of(request)
    check_policy(state.settings, data.model, data.max_tokens)
    received = request.scope["state"]["received"]
    return await open_messages(state, request.scope, data, await request.body(), received, _key_id(request))


async def open_messages(
    state: GatewayState, scope: Scope, data: MessagesRequest, body: bytes, received: float, key_id: str
) -> ASGIApp:
    """A checked Messages request: admission, the telemetry record, the upstream call, the reply.

    Shared by the Litestar route and ``fast_path.MessagesFastPath``. Raises ``GatewayError``
    (refused, or the upstream failed before the first byte) with the slot and record settled.
    """
    admission = await admit(state.limiter, key_id, stream=data.stream, draining=state.hub.draining)
    record = state.telemetry.begin(
        ROUTE_MESSAGES,
        data.model,
        stream=data.stream,
        max_tokens=data.max_tokens,
        received=received,
        messages=msgspec.to_builtins(data.messages) if state.telemetry.capture_content else None,
    )
    rid = request_id(scope)
    try:
        await _observe_client_tools(state, body)
        headers = forward_headers(scope["headers"], simulator=state.settings.local_upstream, request_id=rid)
        record.upstream_sent = time.perf_counter()
        resp = await state.upstream.send(
            "POST",
            "/v1/messages",
            headers=headers,
            body=body,
            query=scope.get("query_string", b"").decode("latin-1"),
            trace_headers=record.trace_headers(),
        )
    except GatewayError as exc:
        await admission.release()
        record.status = exc.status
        await record.finish(outcome_for_error(exc.type), exc.type)
        raise
    except BaseException:
        await admission.release()
        await record.finish("gateway_error", "internal")
        raise
    record.status = resp.status
    record.request_id = resp.header(b"request-id")
    extra = [(b"x-request-id", rid.encode())]
    if data.stream and resp.content_type == "text/event-stream":
        return _Released(StreamRelay(resp, record, state.hub, extra), admission.release)
    try:
        payload = await resp.read()
    finally:
        resp.close()
        await admission.release()
    record.observer.observe_message(payload)
    await record.finish("ok")
    return ASGIResponse(
        body=payload,
        status_code=resp.status,
        media_type=resp.header(b"content-type") or "application/json",
        encoded_headers=[*response_headers(resp.raw_headers), *extra],
    )


class _Released:
    """Run an ASGI app, then release the stream's concurrency slot, whatever happened."""

    __slots__ = ("_app", "_release")

    def __init__(self, app: ASGIApp, release: Any) -> None:  # noqa: ANN401 - an async callable
        self._app = app
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # noqa: ANN401
        try:
            await self._app(scope, receive, send)
        finally:
            await self._release()


async def _pass_through(
    request: Request[Any, Any, Any], method: str, path: str, body: bytes | None
) -> ASGIApp:
    state = state_of(request)
    await admit(state.limiter, _key_id(request), stream=False)
    rid = request_id(request.scope)
    simulator = state.settings.local_upstream
    headers = forward_headers(request.scope["headers"], simulator=simulator, request_id=rid)
    resp = await state.upstream.send(
        method,
        path,
        headers=headers,
        body=body,
        query=request.scope.get("query_string", b"").decode("latin-1"),
    )
    try:
        payload = await resp.read()
    finally:
        resp.close()
    return ASGIResponse(
        body=payload,
        status_code=resp.status,
        media_type=resp.header(b"content-type") or "application/json",
        encoded_headers=[*response_headers(resp.raw_headers), (b"x-request-id", rid.encode())],
    )


@post("/v1/messages/count_tokens", before_request=authenticate, status_code=200, summary="Count tokens")
async def count_tokens(request: Request[Any, Any, Any], data: CountTokensRequest) -> ASGIApp:
    """Anthropic count_tokens, passed through."""
    check_policy(state_of(request).settings, data.model, None)
    return await _pass_through(request, "POST", "/v1/messages/count_tokens", await request.body())


@get("/v1/models", before_request=authenticate, summary="List models")
async def list_models(request: Request[Any, Any, Any]) -> ASGIApp:
    """Anthropic models list, passed through."""
    return await _pass_through(request, "GET", "/v1/models", None)


@get("/v1/models/{model_id:str}", before_request=authenticate, summary="Get a model")
async def get_model(request: Request[Any, Any, Any], model_id: str) -> ASGIApp:
    """One Anthropic model, passed through."""
    return await _pass_through(request, "GET", f"/v1/models/{quote(model_id, safe='')}", None)


proxy_routes = [create_message, count_tokens, list_models, get_model]
