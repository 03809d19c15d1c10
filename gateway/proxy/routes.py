"""The Anthropic-compatible routes: ``/v1/messages`` (stream and not), count_tokens, models.

A streaming request is checked (auth guard, body, policy, limits), sent upstream with retries,
and once the upstream answered 2xx the handler returns a ``StreamRelay``: a raw ASGI app that
writes the upstream's bytes unchanged (``messages.open_messages``, shared with the fast path).
Errors before that point raise ``GatewayError``, turned into Anthropic-shaped JSON by the
handlers in ``app.py``; after it, into ``event: error``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from litestar import Request, get, post
from litestar.response.base import ASGIResponse

from gateway.proxy.guard import admit, check_key, check_policy
from gateway.proxy.messages import open_messages, request_id
from gateway.proxy.request_shapes import CountTokensRequest, MessagesRequest
from gateway.proxy.upstream import forward_headers, response_headers
from gateway.state import state_of

if TYPE_CHECKING:
    from litestar.types import ASGIApp

__all__ = ("authenticate", "proxy_routes")


async def authenticate(request: Request[Any, Any, Any]) -> None:
    """``before_request`` hook: authenticate before the body is even read.

    A hook rather than a guard: Litestar copies the route handler for every guard call.
    """
    state = state_of(request)
    request.scope.setdefault("state", {})["received"] = time.perf_counter()
    request.scope["state"]["key_id"] = check_key(request, state.auth)


def _key_id(request: Request[Any, Any, Any]) -> str:
    return str(request.scope["state"]["key_id"])


@post("/v1/messages", before_request=authenticate, status_code=200, summary="Create a Message")
async def create_message(request: Request[Any, Any, Any], data: MessagesRequest) -> ASGIApp:
    """Anthropic Messages API; streams are relayed byte for byte."""
    state = state_of(request)
    check_policy(state.settings, data.model, data.max_tokens)
    received = request.scope["state"]["received"]
    return await open_messages(state, request.scope, data, await request.body(), received, _key_id(request))


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
