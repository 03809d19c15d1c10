"""Body chunks written straight to the client's transport, when the server is uvicorn's httptools.

Why: an ASGI ``send`` of one body chunk builds a message dict and a coroutine, and uvicorn's
``send`` re-checks its response state before it writes the chunk with its HTTP/1.1 framing. A paced
stream does that once per event, and each is a wake-up of its own, so that machinery is a
large share of what relaying an event costs. ``chunk_writer`` does the same write with the same
bytes, and leaves every other case to ``send``: the client's socket is full (uvicorn waits for
it to drain), the client is gone (uvicorn drops the chunk), or the server is another one (h11,
another ASGI server, a test client), for which it returns None.

It reads uvicorn's ``RequestResponseCycle`` (``transport``, ``flow.write_paused``,
``disconnected``, ``chunked_encoding``): a uvicorn that moves the class or renames them gets
``send`` for every chunk, not a broken write or a failed start. ``tests/proxy/test_server_write.py``
holds the bytes to uvicorn's own.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from litestar.types import Scope, Send

__all__ = ("chunk_writer",)


def _cycle_class() -> type | None:
    try:
        module = importlib.import_module("uvicorn.protocols.http.httptools_impl")
    except ImportError:  # no httptools, or a uvicorn that moved it: every chunk goes through send
        return None
    found = getattr(module, "RequestResponseCycle", None)
    return found if isinstance(found, type) else None


_CYCLE = _cycle_class()  # looked up once: an import statement per stream cost more than the check


def chunk_writer(scope: Scope, send: Send) -> Callable[[bytes], bool] | None:
    """A writer of body chunks for a response whose head ``send`` has written, or None.

    Args:
        scope: The request's ASGI scope.
        send: The server's own ``send`` (not a middleware's wrapper).

    Returns:
        ``write(chunk)``: True when the chunk was written, False when it must go through
        ``send`` instead. None when this server is not uvicorn's httptools protocol, or the
        response is not chunked.
    """
    owner = getattr(send, "__self__", None)
    if _CYCLE is None or not isinstance(owner, _CYCLE) or scope.get("method") == "HEAD":
        return None
    cycle: Any = owner
    try:
        transport, flow = cycle.transport, cycle.flow
        chunked = cycle.response_started and not cycle.response_complete and cycle.chunked_encoding is True
        flow.write_paused, cycle.disconnected  # noqa: B018 - read here so that a rename fails here
    except AttributeError:  # another uvicorn's internals
        return None
    if not chunked:
        return None

    def write(chunk: bytes) -> bool:
        if flow.write_paused or cycle.disconnected:
            return False
        if chunk:  # an empty chunk would be the terminating one
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        return True

    return write
