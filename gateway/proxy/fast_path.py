"""``POST /v1/messages`` past Litestar's handler machinery, for the requests that pass.

Routing, the ``Request`` object, the signature model, the ``before_request`` hook and the
exception middleware cost a stream 0.26 M instructions (callgrind, telemetry on: 2.44 → 2.17 M)
and, on an idle gateway, 0.5 to 0.8 ms of TTFT, the path running with cold caches. This path makes
the same checks (key, body size, body shape, model policy) on the raw ASGI scope, then calls the
route's own ``open_messages``.

A request it does not take whole is handed to the Litestar route with its body replayed, so a
refusal before the upstream call has one renderer and one set of counters: one with an
``Origin`` header (CORS is Litestar's), a missing or wrong key, a body over the limit, a body that
does not decode, a model the policy refuses. Errors after admission (limits, the upstream) go
through the app's own exception handlers, as they would from the route.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request

from gateway.errors import GatewayError
from gateway.handlers import exception_handlers
from gateway.proxy.guard import check_policy
from gateway.proxy.messages import open_messages
from gateway.proxy.request_shapes import MessagesRequest

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import ASGIApp, Receive, Scope, Send

    from gateway.state import GatewayState

__all__ = ("MessagesFastPath",)

_decode = msgspec.json.Decoder(MessagesRequest).decode
#: Where the checked request waits in ``scope["state"]`` for the span-wrapped half.
_DATA, _BODY = "gateway.messages_request", "gateway.messages_body"


class MessagesFastPath:
    """Serve ``POST /v1/messages`` for ``app``, or hand it to ``app``'s route.

    Args:
        app: The Litestar app (its state, settings and exception handlers serve).
        wrap: Wraps the path's ASGI app once checked (the server span), or None.
    """

    def __init__(self, app: Litestar, wrap: Any = None) -> None:  # noqa: ANN401 - a middleware class
        self.app = app
        self._checked: ASGIApp = wrap(self._open) if wrap is not None else self._open

    async def __call__(self, scope: Scope, receive: Receive, send: Send, fallback: ASGIApp) -> None:
        """Serve the request, or pass it to ``fallback`` (the Litestar app) unchanged."""
        received = time.perf_counter()
        state: GatewayState = self.app.state.gateway
        headers = scope["headers"]
        # A loop once compiled (setup.py), where a dict of the headers was built to test one name.
        origin = any(name == b"origin" for name, _ in headers)
        key = None if origin else state.auth.authenticate(headers)
        if key is None or not key.ok:
            await fallback(scope, receive, send)
            return
        body, messages = await _read(receive, state.settings.max_body_bytes)
        try:
            data = _decode(body) if body is not None else None
            if data is not None:
                check_policy(state.settings, data.model, data.max_tokens)
        except (msgspec.DecodeError, GatewayError):
            data = None
        if data is None:
            await fallback(scope, _replay(messages, receive), send)
            return
        scope["app"] = scope["litestar_app"] = self.app
        scope.setdefault("state", {}).update(
            received=received, key_id=key.key_id, **{_DATA: data, _BODY: body}
        )
        # The body goes on as bytes, so whatever reads ``receive`` from here (the relay's
        # disconnect listener) wants the server's next message: no replay layer in between.
        await self._checked(scope, receive, send)

    async def _open(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: GatewayState = self.app.state.gateway
        mine = scope["state"]
        try:
            reply = await open_messages(
                state, scope, mine.pop(_DATA), mine.pop(_BODY), mine["received"], mine["key_id"]
            )
        except Exception as exc:  # noqa: BLE001 - rendered by the app's handlers, as from the route
            request: Request[Any, Any, Any] = Request(scope)
            handler = exception_handlers[GatewayError if isinstance(exc, GatewayError) else Exception]
            reply = handler(request, exc).to_asgi_response(self.app, request)
        await reply(scope, receive, send)


async def _read(receive: Receive, limit: int) -> tuple[bytes | None, list[Any]]:
    """The whole body, or None once it passes ``limit``; and the messages read, for a replay."""
    messages: list[Any] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        size += len(message.get("body", b""))
        if limit and size > limit:
            return None, messages
        if not message.get("more_body", False):
            break
    if len(messages) == 1:
        return messages[0].get("body", b""), messages
    return b"".join([m.get("body", b"") for m in messages]), messages


def _replay(messages: list[Any], receive: Receive) -> Any:  # noqa: ANN401 - an ASGI receive
    """A ``receive`` giving ``messages`` again, then the server's."""
    pending = list(messages)

    async def replay() -> Any:  # noqa: ANN401 - an ASGI message
        return pending.pop(0) if pending else await receive()

    return replay
