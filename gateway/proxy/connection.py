"""One upstream HTTP/1.1 connection (an asyncio protocol around httptools) and its ``Response``.

The parser's callbacks run inside ``data_received``: a response read through ``attach`` hands
each body chunk to its sink in that same call, with no task switch between the socket and the
sink. ``next_chunk()``/``read()`` buffer instead, for callers that want a plain await.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final, cast

import httptools

from gateway.proxy.chunked import one_chunk

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.proxy.client import HttpClient

    #: Takes a piece of the body and, when the read held whole chunks, the read as it came.
    Sink = Callable[[bytes, bytes | None], None]

__all__ = ("Connection", "Response")

#: Watchdog ticks per idle timeout (``HttpClient.period``).
TICKS: Final = 4


class Response:
    """One upstream response: status and headers now, the body through one of three readers.

    Attributes:
        status: The HTTP status code.
        raw_headers: The header lines as received, names lower-cased (once, as they arrive).
    """

    __slots__ = ("_conn", "_index", "raw_headers", "status")

    def __init__(self, conn: Connection, status: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self._conn = conn
        self.status = status
        self.raw_headers = raw_headers
        # Built in C, once: each lookup would otherwise be a Python loop over ~20 headers.
        self._index = dict(raw_headers)

    def has(self, name: bytes) -> bool:
        """Whether the header ``name`` (lower-case) is present."""
        return name in self._index

    def header(self, name: bytes) -> str:
        """A header's value (``name`` lower-case), repeats joined with ``", "``; ``""`` if absent."""
        value = self._index.get(name)
        if value is None:
            return ""
        if len(self._index) == len(self.raw_headers):  # no name is repeated
            return value.decode("latin-1")
        return ", ".join([v.decode("latin-1") for key, v in self.raw_headers if key == name])

    @property
    def content_type(self) -> str:
        """The media type, without parameters."""
        return self.header(b"content-type").split(";", 1)[0].strip().lower()

    def attach(self, sink: Sink) -> asyncio.Future[None]:
        """Deliver the body to ``sink`` as it arrives, from inside the read callback.

        ``sink(piece, framed)`` gets each piece of the body; ``framed`` is None, or the read that
        carried the piece when it held nothing but whole chunks of a chunked body: those bytes,
        as they came, frame the piece (``chunked``).

        Returns a future that completes when the body ended, or fails with ``TimeoutError`` or
        ``OSError``, or with the exception ``sink`` raised.
        """
        return self._conn.attach(sink)

    async def next_chunk(self) -> bytes:
        """The body received since the last call, once there is some; ``b""`` at the end."""
        return await self._conn.next_chunk()

    async def read(self) -> bytes:
        """The whole body."""
        parts = []
        while chunk := await self._conn.next_chunk():
            parts.append(chunk)
        return b"".join(parts)

    def pause_reading(self) -> None:
        """Stop reading from the upstream socket (the client is not keeping up)."""
        self._conn.set_paused(paused=True)

    def resume_reading(self) -> None:
        """Read from the upstream socket again."""
        self._conn.set_paused(paused=False)

    def close(self) -> None:
        """Done with the response: a fully read one returns its connection to the pool."""
        self._conn.release()


class Connection(asyncio.Protocol):
    """One upstream connection: the parser's callbacks feed the response in flight."""

    def __init__(self, client: HttpClient, origin: tuple[str, str, int]) -> None:
        self.origin = origin
        self.nothing_received = True
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None  # set before create_connection returns
        self._parsed: list[bytes] = []  # body pieces of the bytes being parsed
        # The parser's body callback is the list's own append: a C call per read, no Python frame.
        self.on_body: Callable[[bytes], None] = self._parsed.append
        # Whether the parser stands between two chunks: both chunk callbacks (C calls too) turn
        # this list round, so it reads [False, True] before a chunk's size line and after its end.
        self._parity = [False, True]
        self.on_chunk_header: Callable[[], None] = self._parity.reverse
        self.on_chunk_complete: Callable[[], None] = self._parity.reverse
        self._chunked = self._between_chunks = False
        self._parser: httptools.HttpResponseParser | _Idle = _IDLE
        self._feed_data: Callable[[bytes], None] = _IDLE.feed_data  # the parser's, looked up once
        # One parser for the connection's responses, as uvicorn keeps one for its requests: it
        # starts the next message where the last one completed (a connection is only reused
        # after a complete keep-alive response), and making one looks up its eight callbacks.
        self._own_parser: httptools.HttpResponseParser | None = None
        self._head: asyncio.Future[Response] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._sink: Sink | None = None
        self._done: asyncio.Future[None] | None = None
        self._buffer: list[bytes] = []  # body not yet handed on: no sink yet, or next_chunk()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._in_flight = self._complete = self._keep_alive = self._framed = False
        self._lost = self._paused = False
        self._idle_timeout = 0.0
        self._reads = self._seen_reads = self._idle_ticks = 0  # see tick
        #: When it was last pooled (the loop's clock), for its expiry.
        self.idle_since = 0.0

    @property
    def reusable(self) -> bool:
        """Open and idle."""
        transport = self._transport
        return not (self._lost or self._in_flight or transport is None or transport.is_closing())

    async def send(self, payload: bytes, idle_timeout: float) -> Response:
        """Write a request; return its response once the head is in."""
        assert self._transport is not None
        parser = self._own_parser
        if parser is None:
            parser = self._own_parser = httptools.HttpResponseParser(self)
        self._parser = parser
        self._feed_data = parser.feed_data
        self._headers, self._buffer, self._sink, self._done, self._error = [], [], None, None, None
        self._in_flight, self._complete, self.nothing_received = True, False, True
        self._chunked = self._between_chunks = False
        self._parity[:] = (False, True)
        head: asyncio.Future[Response] = self._loop.create_future()
        self._head = head
        self._idle_timeout = idle_timeout
        # The client's first tick may come at once: -1 makes it count as a read, so the timeout
        # runs from a whole period.
        self._seen_reads, self._idle_ticks = -1, 0
        self._client.watch(self)
        self._transport.write(payload)
        try:
            return await head
        except BaseException:
            self._in_flight = False
            self.close()
            raise

    def attach(self, sink: Sink) -> asyncio.Future[None]:
        """See ``Response.attach``."""
        done = self._done = self._loop.create_future()
        buffered, self._buffer = self._buffer, []
        try:
            if buffered:
                sink(b"".join(buffered), None)
        except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
            self._fail(exc)
            return done
        self._sink = sink
        if self._error is not None:
            done.set_exception(self._error)
        elif self._complete:
            done.set_result(None)
        return done

    async def next_chunk(self) -> bytes:
        """The body received so far and not yet read; ``b""`` at the end."""
        while True:
            if self._buffer:
                chunk = b"".join(self._buffer)
                self._buffer.clear()
                return chunk
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            self._waiter = self._loop.create_future()
            await self._waiter

    def set_paused(self, *, paused: bool) -> None:
        """Pause or resume reading the socket."""
        if self._transport is None or self._lost or paused == self._paused:
            return
        self._paused = paused
        if paused:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()

    def release(self) -> None:
        """The response is done with: pool the connection if it can carry another request."""
        if not self._in_flight:
            return
        self._in_flight = False
        self._parser = _IDLE
        self._feed_data = _IDLE.feed_data
        self._sink = None
        self._client.unwatch(self)
        if self._complete and self._keep_alive and self._error is None and not self._lost:
            self.set_paused(paused=False)
            self._client._put(self)  # the pool and its connections are one unit
        else:
            self.close()

    def close(self) -> None:
        """Close the socket."""
        self._client.unwatch(self)
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:  # noqa: D102
        # Once per read of every stream: the checks that only matter once (bytes on an idle
        # connection, a parse error) are the exception path, so a body read costs the parse,
        # the hand-over and one test for the end; a read of one whole chunk, not even the parse.
        self._reads += 1
        sink = self._sink
        between = self._between_chunks
        if between and sink is not None:
            size = one_chunk(data)
            if size:
                # A paced stream's read: one event, one whole chunk. Handed on unparsed: the
                # parser would stand between two chunks after it, as it does now.
                try:
                    sink(data[-2 - size : -2], data)
                except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
                    self._fail(exc)
                return
        parsed = self._parsed
        try:
            self._feed_data(data)
        except httptools.HttpParserError as exc:
            self._between_chunks = False
            self._refuse(exc)
            return
        # Past a chunked reply's head, the parser stands between two chunks when no chunk is
        # open and the read ended with a CRLF: bytes after a chunk's end that hold no CRLF can
        # only be the start of the next size line, and a whole size line opens a chunk.
        self._between_chunks = (
            self._chunked and self._parity[1] and not self._complete and data.endswith(b"\r\n")
        )
        if parsed:
            # One read is one hand-over, however many HTTP chunks (SSE events) it carried.
            chunk = b"".join(parsed)  # the piece itself when there is one
            parsed.clear()
            if sink is None:
                self._buffer.append(chunk)
                self._wake()
            else:
                try:
                    # From one edge to the next, the read is whole chunks: the client's framing.
                    sink(chunk, data if between and self._between_chunks else None)
                except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
                    self._fail(exc)
                    return
        if self._complete:
            self._finish()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self._lost = True
        self._client.unwatch(self)
        if not self._in_flight:
            self._client._drop(self)
        elif not self._complete:
            if self._head is not None and self._head.done() and not self._framed:
                self.on_message_complete()  # a body delimited by the connection's end
                self._finish()
            else:
                self._fail(exc or ConnectionResetError("the upstream closed the connection"))

    # httptools callbacks

    def on_message_begin(self) -> None:  # noqa: D102
        self.nothing_received = False

    def on_header(self, name: bytes, value: bytes) -> None:  # noqa: D102
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:  # noqa: D102
        parser = cast("httptools.HttpResponseParser", self._parser)  # the one feeding this call
        status = parser.get_status_code()
        if status < 200:  # an informational reply: the real one follows
            self._headers = []
            return
        self._keep_alive = parser.should_keep_alive()
        resp = Response(self, status, self._headers)
        self._framed = resp.has(b"content-length") or resp.has(b"transfer-encoding")
        self._chunked = resp.header(b"transfer-encoding").lower().endswith("chunked")
        if self._head is not None and not self._head.done():
            self._head.set_result(resp)

    def on_message_complete(self) -> None:  # noqa: D102
        if self._head is not None and self._head.done():  # else the end of an informational reply
            self._complete = True
            self._client.unwatch(self)

    # internals

    def _refuse(self, exc: httptools.HttpParserError) -> None:
        """Bytes the parser refused: on an idle connection, or a malformed response."""
        self.nothing_received = False
        if not self._in_flight:
            self.close()  # bytes nobody asked for: the connection is not safe to reuse
            return
        parsed = self._parsed
        if parsed:  # the body before the error is still the caller's
            chunk = b"".join(parsed)
            parsed.clear()
            if self._sink is None:
                self._buffer.append(chunk)
            else:
                try:
                    self._sink(chunk, None)
                except Exception as sink_exc:  # noqa: BLE001 - the first failure is the one told
                    self._fail(sink_exc)
                    return
        self._fail(ConnectionError(f"malformed response from the upstream: {exc}"))

    def _finish(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._error is not None:
            return
        self._error = exc
        self._client.unwatch(self)
        if self._head is not None and not self._head.done():
            self._head.set_exception(exc)
        elif self._done is not None and not self._done.done():
            self._done.set_exception(exc)
        self._wake()
        self.close()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def tick(self) -> None:
        """The idle watchdog, each client tick while a response is awaited or read.

        It counts the reads between ticks rather than reading a clock per read: the timeout
        fires between one idle timeout and one more period after the last byte.
        """
        if self._paused or self._reads != self._seen_reads:
            self._seen_reads, self._idle_ticks = self._reads, 0
            return
        self._idle_ticks += 1
        if self._idle_ticks * self._client.period >= self._idle_timeout:
            self._fail(TimeoutError("the upstream sent nothing for too long"))


class _Idle:
    """The parser of a connection with no request in flight: any byte is refused."""

    __slots__ = ()

    def feed_data(self, data: bytes) -> None:
        raise httptools.HttpParserError("bytes on a connection with no request in flight")


_IDLE = _Idle()
