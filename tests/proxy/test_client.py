"""The upstream HTTP/1.1 client against scripted raw-socket servers: framing, reuse, failures, TLS."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trustme

from gateway.proxy import client as client_module
from gateway.proxy.client import HttpClient
from tests.support.fake_upstream import read_request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Server:
    """A loopback server running ``handler(reader, writer, connection_number)`` per connection."""

    def __init__(self, handler: Handler, context: ssl.SSLContext | None = None) -> None:
        self.handler, self.context = handler, context
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.context else 'http'}://localhost:{port}"

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


class Got(list[bytes]):
    """A sink: the pieces in the list, and beside them the reads handed on with their framing."""

    def __init__(self) -> None:
        super().__init__()
        self.framed: list[bytes | None] = []

    def __call__(self, piece: bytes, framed: bytes | None) -> None:
        self.append(piece)
        self.framed.append(framed)


def client(**kwargs: float) -> HttpClient:
    return HttpClient(connect_timeout=kwargs.get("connect", 2.0), idle_timeout=kwargs.get("idle", 5.0))


async def sse_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    """Answer every request on the connection with a three-event chunked stream."""
    while True:
        await read_request(reader)
        writer.write(SSE_HEAD)
        for n in range(3):
            writer.write(chunk(b"event: e\ndata: %d\n\n" % n))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def test_a_sink_gets_every_byte_and_the_connection_is_reused() -> None:
    """Chunked bodies reach the sink unchanged; the second request rides the same connection."""
    server = Server(sse_forever)
    async with server as url:
        http = client()
        for _ in range(2):
            resp = await http.request("POST", url + "/v1/messages", [(b"x-api-key", b"k")], b"{}")
            assert resp.status == 200
            assert resp.content_type == "text/event-stream"
            got = Got()
            await resp.attach(got)
            resp.close()
            assert b"".join(got) == b"".join(b"event: e\ndata: %d\n\n" % n for n in range(3))
            # The events after the first arrive alone, each a whole chunk: handed on as they came.
            assert [framed for framed in got.framed if framed] == [chunk(piece) for piece in got[-2:]]
        await http.close()
    assert server.connections == 1


async def test_content_length_and_close_delimited_bodies() -> None:
    """``read()`` returns a content-length body, and one that ends with the connection."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        seen = await read_request(reader)
        assert seen.body == b'{"a":1}'
        if n == 1:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\nX-Multi: a\r\nx-MULTI: b\r\n\r\nnope!")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
        await writer.drain()

    server = Server(handler)
    async with server as url:
        http = client()
        resp = await http.request("POST", url + "/x", [], b'{"a":1}')
        assert (resp.status, await resp.read(), resp.header(b"x-multi")) == (404, b"nope!", "a, b")
        assert [name for name, _ in resp.raw_headers] == [b"content-length", b"x-multi", b"x-multi"]
        resp.close()  # the handler closes after one reply: the next request finds that out
        resp = await http.request("POST", url + "/x", [], b'{"a":1}')
        assert await resp.read() == b"until the end"
        resp.close()
        await http.close()


async def test_one_connection_parses_reply_after_reply() -> None:
    """A kept-alive connection's replies, framed one way then the other, each parse whole."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        for n in range(4):
            await read_request(reader)
            if n % 2:
                writer.write(SSE_HEAD + chunk(b"event: e\ndata: %d\n\n" % n) + b"0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\nx-n: %d\r\n\r\n#%d" % (n, n))
            await writer.drain()

    server = Server(handler)
    async with server as url:
        http = client()
        for n in range(4):
            resp = await http.request("POST", url + "/x", [], b"{}")
            body = await resp.read()
            resp.close()
            if n % 2:
                assert (resp.status, body) == (200, b"event: e\ndata: %d\n\n" % n)
            else:
                assert (resp.status, body, resp.header(b"x-n")) == (201, b"#%d" % n, str(n))
        await http.close()
    assert server.connections == 1


async def test_a_kept_alive_connection_closed_by_the_server_is_replaced() -> None:
    """The server drops a pooled connection as the next request arrives: retried on a new one."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        if n == 1:
            await read_request(reader)  # the second request on this connection: drop it unanswered

    server = Server(handler)
    async with server as url:
        http = client()
        for _ in range(2):
            resp = await http.request("GET", url + "/v1/models", [])
            assert await resp.read() == b"ok"
            resp.close()
        await http.close()
    assert server.connections == 2


async def test_pooled_connections_expire_on_the_clients_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle pooled connection is closed once past the pool's expiry, by the client's one
    ticker, which stops when nothing is left to watch."""
    monkeypatch.setattr(client_module, "_KEEPALIVE_EXPIRY", 0.2)
    server = Server(sse_forever)
    async with server as url:
        http = client()
        assert http.period == 0.2 / 4
        resp = await http.request("POST", url + "/v1/messages", [], b"{}")
        await resp.attach(Got())
        resp.close()
        assert sum(len(conns) for conns in http._idle.values()) == 1
        await asyncio.sleep(0.1)
        assert sum(len(conns) for conns in http._idle.values()) == 1  # not yet expired
        await asyncio.sleep(0.3)
        assert sum(len(conns) for conns in http._idle.values()) == 0
        await asyncio.sleep(http.period * 2)
        assert http._ticker is None
        resp = await http.request("POST", url + "/v1/messages", [], b"{}")  # a new connection
        await resp.attach(Got())
        resp.close()
        await http.close()
    assert server.connections == 2


async def test_an_idle_timeout_is_whole_wherever_the_tick_falls() -> None:
    """The client's ticker already runs when a request starts (a pooled connection keeps it):
    the request still gets a whole idle timeout, not one less the part of a period gone. Silent
    on its pooled connection, it is not sent again on a new one: the server may be running it."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 1:  # the first request on the first connection is answered, then nothing is
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            await read_request(reader)
        await asyncio.sleep(5)

    server = Server(handler)
    async with server as url:
        http = client(idle=0.4)
        resp = await http.request("GET", url, [])
        assert await resp.read() == b"ok"
        resp.close()
        await asyncio.sleep(0.07)  # the ticker's next tick is 0.03 s away
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            await http.request("POST", url, [], b"{}")
        assert 0.4 - 0.01 <= loop.time() - start < 0.4 + 2 * http.period
        await http.close()
    assert server.connections == 1


async def test_silence_and_resets_fail_the_response() -> None:
    """No head in time: TimeoutError; head then silence: the body fails with TimeoutError; a cut:
    OSError after the bytes that did arrive."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 1:
            await asyncio.sleep(5)
        writer.write(SSE_HEAD + chunk(b"event: a\n\n"))
        await writer.drain()
        if n == 2:
            await asyncio.sleep(5)
        # n == 3: close mid-body, no terminating chunk

    server = Server(handler)
    async with server as url:
        http = client(idle=0.3)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            await http.request("POST", url, [], b"")
        assert 0.3 - 0.01 <= loop.time() - start < 2  # a whole idle timeout, however the tick fell
        resp = await http.request("POST", url, [], b"")
        got = Got()
        with pytest.raises(TimeoutError):
            await resp.attach(got)
        assert got == [b"event: a\n\n"]
        resp.close()
        resp = await http.request("POST", url, [], b"")
        got.clear()
        with pytest.raises(OSError, match="closed"):
            await resp.attach(got)
        assert got == [b"event: a\n\n"]
        resp.close()
        await http.close()


async def test_malformed_replies_refused_connections_and_header_injection() -> None:
    """Garbage is an OSError, a closed port is an OSError, a header with a line break never leaves."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    server = Server(handler)
    async with server as url:
        http = client()
        resp = await http.request("POST", url, [], b"")
        with pytest.raises(OSError, match="malformed"):
            await resp.read()
        resp.close()
        with pytest.raises(ValueError, match="line break"):
            await http.request("POST", url, [(b"x-a", b"1\r\nx-api-key: stolen")], b"")
        await http.close()
    with pytest.raises(OSError):
        await client().request("GET", url, [])  # the server is gone


async def test_a_failing_sink_and_a_paused_reader() -> None:
    """A sink's exception fails the future; while paused, nothing is delivered."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD)
        for n in range(3):
            writer.write(chunk(b"data: %d\n\n" % n))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    server = Server(handler)
    async with server as url:
        http = client()
        resp = await http.request("POST", url, [], b"")
        got: list[bytes] = []

        def pausing_sink(data: bytes, _: bytes | None) -> None:
            got.append(data)
            resp.pause_reading()

        done = resp.attach(pausing_sink)
        await asyncio.sleep(0.3)
        assert got == [b"data: 0\n\n"]  # paused after the first: the rest waits in the socket
        resp.resume_reading()
        await asyncio.sleep(0.3)
        assert len(got) == 2
        resp.resume_reading()
        await done
        assert b"".join(got) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        resp.close()

        resp = await http.request("POST", url, [], b"")

        def failing_sink(_: bytes, framed: bytes | None) -> None:
            if framed is not None:  # a chunk handed on unparsed, after the first
                raise RuntimeError("sink broke")

        with pytest.raises(RuntimeError, match="sink broke"):
            await resp.attach(failing_sink)
        resp.close()
        await http.close()


async def test_tls_and_an_informational_reply() -> None:
    """HTTPS with the given trust store; a 100 Continue before the real reply is skipped."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecure")
        await writer.drain()

    async with Server(handler, server_context) as url:
        http = HttpClient(connect_timeout=2, idle_timeout=5, ssl_context=client_context)
        resp = await http.request("GET", url + "/v1/models", [])
        assert (resp.status, await resp.read()) == (200, b"secure")
        resp.close()
        await http.close()
        with pytest.raises(ssl.SSLError):  # the system trust store does not know this CA
            await client().request("GET", url + "/v1/models", [])


async def test_names_are_resolved_once_and_every_address_is_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two new connections to ``localhost`` resolve it once; an address that refuses (here a
    dead one listed first) falls through to the next."""
    server = Server(sse_forever)
    async with server as url:
        loop = asyncio.get_running_loop()
        real = loop.getaddrinfo
        calls: list[str] = []

        async def counting(host: str, port: int, **kwargs: object) -> list[tuple[object, ...]]:
            calls.append(host)
            infos = await real(host, port, **kwargs)  # type: ignore[arg-type]
            dead = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", 1))
            return [dead, *[i for i in infos if i[0] == socket.AF_INET]]

        monkeypatch.setattr(loop, "getaddrinfo", counting)
        http = client()
        first = await http.request("POST", url, [], b"")
        second = await http.request("POST", url, [], b"")  # the first is still in flight: a new one
        for resp in (first, second):
            await resp.read()
            resp.close()
        await http.close()
    assert calls == ["localhost"]
    assert server.connections == 2
