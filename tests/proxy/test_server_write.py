"""Body chunks written to uvicorn's transport: the bytes uvicorn's ``send`` writes, and only then."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from gateway.proxy import relay as relay_module
from gateway.proxy import server_write
from gateway.proxy.server_write import chunk_writer
from tests.support.inproc import serve_in_thread

if TYPE_CHECKING:
    from collections.abc import Callable

START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
CHUNKS = [b"event: content_block_delta\ndata: {}\n\n", b"x", b"\xe2\x9c" * 300, b"", b"a\r\n0\r\n\r\n"]


class Transport(asyncio.Transport):
    """Keeps what is written."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


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
    write = chunk_writer(direct.scope, direct.send)  # type: ignore[arg-type]
    assert write is not None
    for chunk in CHUNKS:
        await by_send.send({"type": "http.response.body", "body": chunk, "more_body": True})
        assert write(chunk)
    for c in (by_send, direct):
        await c.send({"type": "http.response.body", "body": b"", "more_body": False})
    assert got.written == expected.written
    assert got.written.endswith(b"a\r\n0\r\n\r\n\r\n0\r\n\r\n")  # the empty chunk wrote nothing
    assert direct.response_complete


async def test_a_full_or_gone_client_is_left_to_send() -> None:
    """While uvicorn waits for the client to drain, or after it left, nothing is written."""
    c, transport = cycle()
    await c.send(START)  # type: ignore[arg-type]
    write = chunk_writer(c.scope, c.send)  # type: ignore[arg-type]
    assert write is not None
    before = len(transport.written)
    c.flow.pause_writing()
    assert not write(b"x")
    c.flow.resume_writing()
    assert write(b"x")
    assert transport.written[before:] == b"1\r\nx\r\n"
    c.disconnected = True
    assert not write(b"y")
    assert transport.written[before:] == b"1\r\nx\r\n"


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


def test_the_relay_writes_directly_under_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Served by uvicorn (httptools), the relay gets a writer: the server's own send reaches it."""
    made: list[Callable[[bytes], bool] | None] = []

    def spy(scope: Any, send: Any) -> Callable[[bytes], bool] | None:
        made.append(chunk_writer(scope, send))
        return made[-1]

    monkeypatch.setattr(relay_module, "chunk_writer", spy)
    with serve_in_thread() as gateway:
        body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}
        with httpx.stream("POST", f"{gateway.url}/v1/messages", json=body, timeout=30,
                          headers={"anthropic-version": "2023-06-01"}) as resp:
            raw = resp.read()
    assert resp.status_code == 200
    assert raw.count(b"event: content_block_delta") > 1
    assert raw.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert len(made) == 1
    assert made[0] is not None
