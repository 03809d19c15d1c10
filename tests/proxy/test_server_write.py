"""Body chunks written to uvicorn's transport: the bytes uvicorn's ``send`` writes, and only then."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import httpx
import pytest
import trustme
import uvloop
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from gateway.proxy import server_write
from gateway.proxy.server_write import ChunkWriter, chunk_writer
from tests.support.inproc import serve_in_thread

START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
# Sizes on both sides of the writer's table of size lines (1 KiB), an empty one, one that looks like an end.
CHUNKS = [b"event: content_block_delta\ndata: {}\n\n", b"x", b"\xe2\x9c" * 300, b"b" * 1023, b"c" * 1024,
          b"z" * 70000, b"", b"a\r\n0\r\n\r\n"]


class Transport(asyncio.Transport):
    """Keeps what is written."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.buffered = 0  # bytes the kernel has not taken yet
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.written += b"<closed>"


def cycle(method: str = "POST") -> tuple[RequestResponseCycle, Transport]:
    transport = Transport()
    scope: Any = {"type": "http", "method": method, "http_version": "1.1"}
    log = logging.getLogger("test")
    return RequestResponseCycle(
        scope, transport, FlowControl(transport), log, log, access_log=False, default_headers=[],
        message_event=asyncio.Event(), expect_100_continue=False, keep_alive=True, on_response=lambda: None,
    ), transport


async def test_the_bytes_are_those_uvicorn_writes() -> None:
    """Chunks written directly, then the end through ``send``: the same bytes as ``send`` alone."""
    by_send, expected = cycle()
    direct, got = cycle()
    for c in (by_send, direct):
        await c.send(START)  # type: ignore[arg-type]
    writer = chunk_writer(direct.scope, direct.send)  # type: ignore[arg-type]
    assert writer is not None
    for chunk in CHUNKS:
        await by_send.send({"type": "http.response.body", "body": chunk, "more_body": True})
        assert writer.write(chunk)
    for c in (by_send, direct):
        await c.send({"type": "http.response.body", "body": b"", "more_body": False})
    assert got.written == expected.written
    assert got.written.endswith(b"a\r\n0\r\n\r\n\r\n0\r\n\r\n")  # the empty chunk wrote nothing
    assert direct.response_complete


async def started() -> tuple[RequestResponseCycle, Transport, ChunkWriter, int]:
    """A cycle whose head is written, its transport, its chunk writer, and the head's length."""
    c, transport = cycle()
    await c.send(START)  # type: ignore[arg-type]
    writer = chunk_writer(c.scope, c.send)  # type: ignore[arg-type]
    assert writer is not None
    return c, transport, writer, len(transport.written)


async def test_a_chunk_in_the_upstream_s_framing_is_written_as_it_came() -> None:
    """``framed`` (whole chunks, as the upstream sent them) is written instead of a new frame."""
    _, transport, writer, before = await started()
    assert writer.write(b"abcd", b"2;x\r\nab\r\n2\r\ncd\r\n")
    assert writer.write(b"e")
    assert transport.written[before:] == b"2;x\r\nab\r\n2\r\ncd\r\n1\r\ne\r\n"


async def test_a_client_behind_or_gone_is_left_to_send() -> None:
    """While bytes wait in the transport, or once it is closing, nothing is written."""
    _, transport, writer, before = await started()
    transport.buffered = 1  # below uvicorn's high-water mark too: send decides whether to wait
    assert not writer.write(b"x")
    transport.buffered = 0
    assert writer.write(b"x")
    assert transport.written[before:] == b"1\r\nx\r\n"
    transport.closing = True
    assert not writer.write(b"y")
    assert transport.written[before:] == b"1\r\nx\r\n"


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_uvicorn_pauses_and_drops_only_where_the_writer_stands_aside(loop_factory: Any) -> None:
    """What the writer reads off a real transport covers uvicorn's two flags, on either loop.

    A loopback connection whose peer does not read: uvicorn's protocol pauses its writes past
    the transport's high-water mark, which takes bytes in the transport's buffer, and marks a
    client gone in ``connection_lost``, once the transport is closed.
    """

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        paused: list[bool] = []

        class Protocol(asyncio.Protocol):
            def pause_writing(self) -> None:
                paused.append(True)

        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(Protocol, "127.0.0.1", port)
        writer = ChunkWriter(transport)
        try:
            assert writer.write(b"x")
            transport.set_write_buffer_limits(high=1)
            while not paused:  # the loop does not turn, so the peer reads nothing
                transport.write(b"z" * 65536)
            assert not writer.write(b"x")
        finally:
            transport.abort()
            server.close()
        assert not writer.write(b"x")

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())


def test_a_plain_uvloop_socket_is_written_to_directly_and_in_order() -> None:
    """On uvloop's plain TCP transport the writer writes to the socket itself; what the socket
    does not take waits in the transport, the writer stands aside until it has left, and the
    peer gets every byte in order. Through a real socket the transport's checks could not hold
    for a wrong write: the bytes would come out of order."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        received = bytearray()
        gone = loop.create_future()

        class Reader(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                received.extend(data)

            def connection_lost(self, exc: Exception | None) -> None:
                gone.set_result(None)

        server = await loop.create_server(Reader, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        writer = ChunkWriter(transport)
        assert writer._fd == transport.get_extra_info("socket").fileno()
        big = b"y" * (32 << 20)  # more than a loopback socket takes at once
        assert writer.write(b"a")
        assert transport.get_write_buffer_size() == 0  # written whole: nothing left to the transport
        assert writer.write(big)
        assert transport.get_write_buffer_size() > 0  # the rest waits in the transport
        assert not writer.write(b"b")  # which send would have to wait for
        while transport.get_write_buffer_size():
            await asyncio.sleep(0.01)
        assert writer.write(b"c", b"1\r\nc\r\n")
        transport.close()
        await gone
        server.close()
        assert received == b"1\r\na\r\n" + b"2000000\r\n" + big + b"\r\n1\r\nc\r\n"

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_only_uvloop_s_plain_transports_are_written_to_directly(loop_factory: Any, tls: bool) -> None:
    """A TLS transport (its socket carries ciphertext), asyncio's own transports and anything
    else keep their ``write``."""
    assert ChunkWriter(Transport())._fd == -1
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=server_context if tls else None)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(
            asyncio.Protocol, "127.0.0.1", port,
            ssl=client_context if tls else None, server_hostname="localhost" if tls else None,
        )
        try:
            return ChunkWriter(transport)._fd
        finally:
            transport.abort()
            server.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        fd = runner.run(scenario())
    assert (fd >= 0) == (loop_factory is uvloop.new_event_loop and not tls)


async def test_other_servers_and_responses_get_none() -> None:
    """A send that is not uvicorn's httptools cycle, a HEAD, a sized or unstarted response: None."""

    async def plain_send(message: Any) -> None:
        pass

    scope: Any = {"type": "http", "method": "POST"}
    assert chunk_writer(scope, plain_send) is None
    unstarted, _ = cycle()
    assert chunk_writer(unstarted.scope, unstarted.send) is None  # type: ignore[arg-type]
    head, _ = cycle("HEAD")
    await head.send(START)  # type: ignore[arg-type]
    assert chunk_writer(head.scope, head.send) is None  # type: ignore[arg-type]
    sized, _ = cycle()
    await sized.send({**START, "headers": [(b"content-length", b"3")]})  # type: ignore[arg-type]
    assert chunk_writer(sized.scope, sized.send) is None  # type: ignore[arg-type]


async def test_a_uvicorn_without_the_class_gets_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where uvicorn's httptools cycle cannot be found, every chunk is left to ``send``."""
    c, _ = cycle()
    await c.send(START)  # type: ignore[arg-type]
    monkeypatch.setattr(server_write, "_CYCLE", None)
    assert chunk_writer(c.scope, c.send) is None  # type: ignore[arg-type]


RELAYED = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
           *[(b"anthropic-ratelimit-requests-%d" % i, b"4000") for i in range(12)], (b"x-request-id", b"r1")]


def counting_send(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make uvicorn's ``send`` record the type of each message it is given."""
    seen: list[str] = []
    original = RequestResponseCycle.send

    async def send(self: RequestResponseCycle, message: Any) -> None:
        relayed = (b"x-accel-buffering", b"no") in message.get("headers", ())  # a relay's head
        seen.append(message["type"] + (" (relay)" if relayed else ""))
        await original(self, message)

    monkeypatch.setattr(RequestResponseCycle, "send", send)
    return seen


@pytest.mark.parametrize("keep_alive", [True, False])
async def test_a_head_written_directly_is_the_head_uvicorn_writes(
    monkeypatch: pytest.MonkeyPatch, keep_alive: bool
) -> None:
    """A relay's head (its defaults, ~15 headers, keep-alive or not): uvicorn's bytes and state."""
    seen = counting_send(monkeypatch)
    runs = []
    for direct in (False, True):
        c, transport = cycle()
        c.keep_alive = keep_alive
        c.default_headers = [(b"date", b"Wed, 02 Dec 2026 16:00:00 GMT"), (b"server", b"uvicorn")]
        send = server_write.head_sender(c.send) if direct else c.send  # type: ignore[arg-type]
        await send({"type": "http.response.start", "status": 200, "headers": RELAYED})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        state = (c.response_started, c.response_complete, c.chunked_encoding, c.keep_alive,
                 c.waiting_for_100_continue)
        runs.append((bytes(transport.written), state))
    assert runs[1] == runs[0]
    assert runs[1][0].startswith(b"HTTP/1.1 200 OK\r\ndate: ")
    # uvicorn's own send wrote the first run's head, not the second's; both runs' bodies.
    assert seen == ["http.response.start", *["http.response.body"] * 4]


async def test_a_head_of_list_pairs_is_written_as_uvicorn_writes_it() -> None:
    """ASGI lets a header be any two-item iterable; the direct head takes lists as uvicorn does."""
    runs = []
    for direct in (False, True):
        c, transport = cycle()
        send = server_write.head_sender(c.send) if direct else c.send  # type: ignore[arg-type]
        await send({"type": "http.response.start", "status": 200, "headers": [[b"x-a", b"1"], [b"x-b", b"2"]]})
        runs.append((bytes(transport.written), c.chunked_encoding))
    assert runs[1] == runs[0]
    assert b"x-a: 1\r\nx-b: 2\r\n" in runs[1][0]


@pytest.mark.parametrize(
    ("method", "status", "headers"),
    [
        ("POST", 200, [(b"content-length", b"1")]),  # a sized body: uvicorn counts it
        ("POST", 200, [(b"connection", b"close")]),  # uvicorn closes after it
        ("POST", 200, [(b"X-Upper", b"a")]),  # uvicorn lower-cases it
        ("POST", 204, []),  # no body, no chunking
        ("HEAD", 200, []),
    ],
)
async def test_other_heads_are_left_to_send(
    monkeypatch: pytest.MonkeyPatch, method: str, status: int, headers: list[tuple[bytes, bytes]]
) -> None:
    """Heads that uvicorn frames otherwise go through its own ``send``: same bytes, same state."""
    seen = counting_send(monkeypatch)
    runs = []
    for direct in (False, True):
        c, transport = cycle(method)
        send = server_write.head_sender(c.send) if direct else c.send  # type: ignore[arg-type]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        runs.append((bytes(transport.written), c.chunked_encoding, c.keep_alive))
    assert runs[1] == runs[0]
    assert seen == ["http.response.start"] * 2


async def test_a_list_of_names_checked_before_keeps_its_own_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    """The names' verdict is remembered per exact list: names that join into a framing header's
    name do not vouch for it, a refused list stays refused, and values are checked every time."""
    seen = counting_send(monkeypatch)
    monkeypatch.setattr(server_write, "_CHECKED_NAMES", {})

    async def head(headers: list[tuple[bytes, bytes]]) -> bool:
        c, transport = cycle()
        send = server_write.head_sender(c.send)  # type: ignore[arg-type]
        before = len(seen)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        except RuntimeError:
            assert not transport.written
        return len(seen) == before  # written directly

    for _ in range(2):
        assert await head([(b"content-len", b"1"), (b"gth", b"2")])
        assert not await head([(b"content-length", b"12")])
        assert not await head([(b"x-a", b"1"), (b"X-B", b"2")])
    assert not await head([(b"content-len", b"1"), (b"gth", b"2\n")])
    assert len(server_write._CHECKED_NAMES) == 3


async def test_a_refused_header_is_refused_as_uvicorn_refuses_it() -> None:
    """A value uvicorn would refuse is left to uvicorn, which raises; nothing is written."""
    c, transport = cycle()
    send = server_write.head_sender(c.send)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="Invalid HTTP header value"):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"a\nb")]})
    assert not transport.written


async def _outcome(direct: bool, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, str]:
    c, transport = cycle()
    send = server_write.head_sender(c.send) if direct else c.send  # type: ignore[arg-type]
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
    except RuntimeError as exc:
        return bytes(transport.written), str(exc)
    return bytes(transport.written), ""


@pytest.mark.parametrize("where", ["name", "value"])
async def test_every_byte_is_refused_or_written_as_uvicorn_does(where: str) -> None:
    """Each of the 256 byte values in a name or a value: the same bytes written, or the same refusal."""
    refused = 0
    for byte in range(256):
        odd = b"a" + bytes((byte,)) + b"z"
        headers = [(odd, b"v")] if where == "name" else [(b"x-a", odd)]
        theirs, ours = await _outcome(False, headers), await _outcome(True, headers)
        assert ours == theirs, byte
        refused += bool(theirs[1])
    assert refused == (49 if where == "name" else 32)  # uvicorn's two byte classes


async def test_other_servers_keep_their_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not uvicorn's httptools cycle, or uvicorn's pieces not found: the send itself, unchanged."""

    async def plain_send(message: Any) -> None:
        pass

    assert server_write.head_sender(plain_send) is plain_send
    c, _ = cycle()
    monkeypatch.setattr(server_write, "_HEAD", None)
    assert server_write.head_sender(c.send) == c.send  # type: ignore[arg-type]


def test_the_relay_writes_directly_under_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Served by uvicorn (httptools), the relay's head and chunks skip ``send``; only its end takes it."""
    seen: list[tuple[int, str, bool]] = []  # (server port, message type, more_body)
    original = RequestResponseCycle.send

    async def send(self: RequestResponseCycle, message: Any) -> None:
        seen.append((self.scope["server"][1], message["type"], bool(message.get("more_body"))))
        await original(self, message)

    monkeypatch.setattr(RequestResponseCycle, "send", send)
    with serve_in_thread() as gateway:
        before = len(seen)  # the readiness probe's response goes through send
        body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}
        with httpx.stream("POST", f"{gateway.url}/v1/messages", json=body, timeout=30,
                          headers={"anthropic-version": "2023-06-01"}) as resp:
            raw = resp.read()
    assert resp.status_code == 200
    assert raw.count(b"event: content_block_delta") > 1
    assert raw.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    port = httpx.URL(gateway.url).port
    ours = {(kind, more) for server, kind, more in seen[before:] if server == port}
    # The head and every chunk went to the transport; the end (and the probe's end) took send.
    assert ours == {("http.response.body", False)}
    # The embedded simulator's stream went through its uvicorn's send, chunk by chunk.
    assert sum(1 for server, kind, more in seen if server != port and more) > 1
