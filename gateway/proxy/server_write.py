"""Response heads and body chunks written straight to the client's transport, under uvicorn's httptools.

Why: an ASGI ``send`` of one body chunk builds a message dict and a coroutine, and uvicorn's
``send`` re-checks its response state before it writes the chunk with its HTTP/1.1 framing. A
paced stream does that once per event, and each is a wake-up of its own, so that machinery is a
large share of what relaying an event costs. ``chunk_writer`` does the same write with the same
bytes (on uvloop's plain sockets, the one ``write(2)`` uvloop's transport would make, without
its bookkeeping: ``ChunkWriter``), and leaves every other case to ``send``: bytes wait in the
transport (uvicorn waits for the client to drain past its high-water mark), the transport is
closing (uvicorn drops the chunk of a client gone), or the server is another one (h11, another
ASGI server, a test client), for which it returns None. ``head_sender`` does the same for a
chunked response head, whose ~25 headers uvicorn's ``send`` checks one by one.

It reads uvicorn's ``RequestResponseCycle`` (``transport``, ``response_started``,
``response_complete``, ``chunked_encoding``): a uvicorn that moves the class or renames them
gets ``send`` for every chunk, not a broken write or a failed start. ``tests/proxy/test_server_write.py``
holds the bytes to uvicorn's own.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import TYPE_CHECKING, Any, Final

from gateway.proxy.chunked import size_line

if TYPE_CHECKING:
    from collections.abc import Callable

    from litestar.types import Scope, Send

__all__ = ("ChunkWriter", "chunk_writer", "head_sender", "uvicorn_cycle")


def _uvicorn() -> tuple[type | None, tuple[dict[int, bytes], bytes, bytes] | None]:
    try:
        module = importlib.import_module("uvicorn.protocols.http.httptools_impl")
    except ImportError:  # no httptools, or a uvicorn that moved it: every message goes through send
        return None, None
    found = getattr(module, "RequestResponseCycle", None)
    cycle = found if isinstance(found, type) else None
    # The status lines and the two header checks uvicorn's send uses, so that both stay its own.
    names = ("STATUS_LINE", "HEADER_RE", "HEADER_VALUE_RE")
    lines, name_re, value_re = (getattr(module, name, None) for name in names)
    if not (isinstance(lines, dict) and _byte_class(name_re) and _byte_class(value_re)):
        return cycle, None
    return cycle, (lines, _allowed(name_re), _allowed(value_re))  # type: ignore[arg-type]


def _byte_class(pattern: object) -> bool:
    """Whether ``pattern`` is one bracketed byte class, which matches a string iff it matches a byte."""
    if not isinstance(pattern, re.Pattern) or not isinstance(pattern.pattern, bytes):
        return False
    source = pattern.pattern
    return source.startswith(b"[") and source.endswith(b"]") and not pattern.flags & ~re.ASCII


def _allowed(pattern: re.Pattern[bytes]) -> bytes:
    """The bytes a one-byte-class pattern does not match: what ``translate`` deletes to check."""
    return bytes(b for b in range(256) if not pattern.search(bytes((b,))))


def _plain_transports() -> frozenset[type]:
    """The transports of uvloop for a plain stream socket, which write to it with one ``write(2)``."""
    try:
        module = importlib.import_module("uvloop.loop")
    except ImportError:
        return frozenset()
    found = (getattr(module, name, None) for name in ("TCPTransport", "UnixTransport"))
    return frozenset(kind for kind in found if isinstance(kind, type))


# Looked up once: an import statement per stream cost more than the check.
_CYCLE, _HEAD = _uvicorn()
_PLAIN: Final = _plain_transports()
_os_write: Final = os.write  # a static of the compiled module, where `os.write` is two lookups
#: Headers that change uvicorn's framing or connection handling: such a head goes through send.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})


def uvicorn_cycle(method: object) -> Any | None:  # noqa: ANN401 - uvicorn's cycle
    """The uvicorn ``RequestResponseCycle`` whose ``send`` or ``receive`` ``method`` is, or None."""
    owner = getattr(method, "__self__", None)
    return owner if _CYCLE is not None and isinstance(owner, _CYCLE) else None


def head_sender(send: Send) -> Send:
    """``send``, except that a chunked response head is written straight to uvicorn's transport.

    uvicorn's ``send`` checks each header of a response head with two regular expressions and
    lower-cases its name, one by one: a relayed stream has about twenty (Anthropic's rate-limit
    headers among them), and the two searches cost about 40 instructions a byte. This writes the
    same bytes after the same two checks, each made once over all names and all values with
    ``bytes.translate`` (the bytes uvicorn's patterns allow deleted, so what is left is what they
    refuse), and sets the response state uvicorn's ``send`` sets. Every other message, and any
    head it cannot write as uvicorn would (a refused header, a ``content-length``,
    ``transfer-encoding`` or ``connection`` header, HEAD, 204 or 304, the access log on, a full
    or gone client), goes to ``send``.

    Args:
        send: The server's own ``send``.
    """
    cycle = uvicorn_cycle(send)
    if cycle is None or _HEAD is None:
        return send

    async def head_send(message: Any) -> None:  # noqa: ANN401 - an ASGI message
        if message["type"] != "http.response.start" or not _write_head(cycle, message):
            await send(message)

    return head_send


def _write_head(cycle: Any, message: Any) -> bool:  # noqa: ANN401 - uvicorn's cycle, an ASGI message
    try:
        if (
            cycle.response_started
            or cycle.disconnected
            or cycle.flow.write_paused
            or cycle.access_log
            or cycle.scope["method"] == "HEAD"
        ):
            return False
        status = message["status"]
        # Any: ASGI allows any two-item iterable per header, as uvicorn's own send takes them.
        headers: list[Any] = cycle.default_headers + list(message.get("headers", ()))
    except (AttributeError, KeyError):  # another uvicorn's internals
        return False
    status_lines, name_ok, value_ok = _HEAD  # type: ignore[misc]
    line = status_lines.get(status)
    if line is None or status in (204, 304) or not headers:
        return False
    # One pass, compiled (setup.py), builds the head's pieces; the values, sliced out of them,
    # are checked once for all headers, the names once for each list of names.
    head = [line]
    for pair in headers:
        # The same unpacking twice, on purpose: where the pair is known to be a 2-tuple, the
        # compiled code reads it by index; elsewhere (a list) it takes an iterator, 300
        # instructions a header.
        if type(pair) is tuple and len(pair) == 2:
            name, value = pair
        else:
            name, value = pair
        head.append(name)
        head.append(b": ")
        head.append(value)
        head.append(b"\r\n")
    if b"".join(head[3::4]).translate(None, value_ok) or not _names_ok(head[1::4], name_ok):
        return False  # a byte uvicorn's value or name pattern refuses, or a framing header
    head.append(_KEEP_TAIL if cycle.keep_alive else _CLOSE_TAIL)
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.chunked_encoding = True
    cycle.transport.write(b"".join(head))
    return True


#: Lists of header names checked already, and the verdict: a relayed stream's head repeats
#: the names of the one before (the upstream's, response after response), where the values vary.
_CHECKED_NAMES: dict[tuple[Any, ...], bool] = {}
_CHECKED_NAMES_MAX = 64


def _names_ok(names: list[Any], name_ok: bytes) -> bool:
    """Whether uvicorn's ``send`` would write ``names`` as they are, and frame the body itself.

    No byte its pattern refuses, lower case, no header that changes its framing. A list checked
    before is a lookup: about a tenth of the check.
    """
    key = tuple(names)
    found = _CHECKED_NAMES.get(key)
    if found is not None:
        return found
    joined = b"".join(names)
    ok = not joined.translate(None, name_ok) and joined == joined.lower() and _FRAMING.isdisjoint(names)
    if len(_CHECKED_NAMES) >= _CHECKED_NAMES_MAX:
        _CHECKED_NAMES.clear()
    _CHECKED_NAMES[key] = ok
    return ok


_KEEP_TAIL = b"transfer-encoding: chunked\r\n\r\n"
_CLOSE_TAIL = b"connection: close\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk_writer(scope: Scope, send: Send) -> ChunkWriter | None:
    """A writer of body chunks for a response whose head ``send`` has written, or None.

    Args:
        scope: The request's ASGI scope.
        send: The server's own ``send`` (not a middleware's wrapper).

    Returns:
        The writer; None when this server is not uvicorn's httptools protocol, or the response
        is not chunked.
    """
    cycle = uvicorn_cycle(send)
    if cycle is None or scope.get("method") == "HEAD":
        return None
    try:
        transport = cycle.transport
        chunked = cycle.response_started and not cycle.response_complete and cycle.chunked_encoding is True
    except AttributeError:  # another uvicorn's internals
        return None
    if not chunked:
        return None
    return ChunkWriter(transport)


class ChunkWriter:
    """Writes body chunks, framed as uvicorn would or as the upstream did, while the client keeps up.

    Whether it keeps up is read off the transport, the object the write touches anyway: nothing
    waits in its buffer, and it is not closing. uvicorn pauses its writes (``flow.write_paused``)
    only past the transport's high-water mark, and marks a client gone (``disconnected``) only
    once the transport is closed, so an empty buffer on an open transport is neither; anything
    else goes through ``send``, which waits or drops as uvicorn does.

    On uvloop's plain TCP or Unix transport, a chunk is written to the socket with ``os.write``,
    the one ``write(2)`` the transport would make, without its ~900 instructions of bookkeeping
    around it (two fifths of what an event's write cost). That is safe only where the transport
    would write at once too: nothing waits in its buffer (so bytes stay in order), and it is not
    closing (so the descriptor is still its own). What the socket does not take (a full socket,
    an error) goes to the transport's ``write``, which buffers the rest, or finds the error and
    closes as it always does.
    """

    __slots__ = ("_buffered", "_closing", "_fd", "_write")

    def __init__(self, transport: Any) -> None:  # noqa: ANN401 - the server's transport
        # The transport's methods looked up once: a method call by name finds it again each time.
        self._write: Callable[[bytes], object] = transport.write
        self._buffered: Callable[[], int] = transport.get_write_buffer_size
        self._closing: Callable[[], bool] = transport.is_closing
        self._fd = -1
        if type(transport) in _PLAIN:  # not a TLS transport: its socket carries ciphertext
            sock = transport.get_extra_info("socket")
            self._fd = -1 if sock is None else sock.fileno()

    def write(self, chunk: bytes, framed: bytes | None = None) -> bool:
        """Write ``chunk``; False (nothing written) when it must go through ``send`` instead.

        ``framed``, when given, is ``chunk`` already in chunks (as the upstream sent it), written
        as it is.
        """
        if self._buffered() or self._closing():
            return False
        if framed is None:
            if not chunk:  # an empty chunk would be the terminating one
                return True
            framed = size_line(len(chunk)) + chunk + b"\r\n"
        if self._fd >= 0:
            try:
                sent = _os_write(self._fd, framed)
            except OSError:  # a full socket, or a broken connection the transport will find
                sent = 0
            if sent == len(framed):
                return True
            framed = framed[sent:]
        self._write(framed)
        return True
