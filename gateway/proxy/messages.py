"""A checked Messages request, from admission to the reply: the path of every stream.

Shared by the Litestar route (``routes.create_message``) and the fast path
(``fast_path.MessagesFastPath``). Compiled (``setup.py``), as are the checks it calls: it runs
once a stream, before the stream's first byte, on a cold cache.
"""

from __future__ import annotations

import time
from random import getrandbits
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.response.base import ASGIResponse

from gateway.errors import GatewayError
from gateway.proxy.guard import admit
from gateway.proxy.relay import StreamRelay
from gateway.proxy.upstream import forward_headers, response_headers
from gateway.telemetry.metrics import ROUTE_MESSAGES
from gateway.telemetry.stream import outcome_for_error
from gateway.telemetry.tool_latency import extract_tool_result_ids

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Scope

    from gateway.proxy.request_shapes import MessagesRequest
    from gateway.state import GatewayState

__all__ = ("open_messages", "request_id")


def request_id(scope: Scope) -> str:
    """The gateway's id for this request: the client's (or nginx's) ``x-request-id``, or a new one."""
    state = scope.setdefault("state", {})
    rid = state.get("request_id")
    if rid is None:
        incoming = ""
        for name, value in scope["headers"]:  # the first value; a loop in C once compiled
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        # 128 random bits as 32 hex digits, like uuid4().hex, without its urandom system call
        # and UUID object: an id to correlate lines and spans by, not a secret.
        rid = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else f"{getrandbits(128):032x}"
        state["request_id"] = rid
    return str(rid)


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
        # Read through Any: compiled, ``exc.status`` (a property its subclasses override) is
        # looked up in a method table mypyc does not build for exception classes: a segfault.
        error: Any = exc
        await admission.release()
        record.status = error.status
        await record.finish(outcome_for_error(error.type), error.type)
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
