"""Chunked framing: the one-chunk test, and the reads a Connection hands on with their framing."""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy.chunked import one_chunk, size_line
from gateway.proxy.client import HttpClient
from gateway.proxy.connection import Connection

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def test_size_lines() -> None:
    """Lower-case hex, no leading zero, CRLF, below and above the table."""
    assert [size_line(n) for n in (1, 10, 255, 1023, 1024, 4096)] == [
        b"1\r\n",
        b"a\r\n",
        b"ff\r\n",
        b"3ff\r\n",
        b"400\r\n",
        b"1000\r\n",
    ]


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (b"1\r\nx\r\n", 1),
        (b"5\r\n\r\n\r\n\r\r\n", 5),  # the payload may hold anything, CRLFs included
        (b"c8\r\n" + b"d" * 200 + b"\r\n", 200),
        (b"fff\r\n" + b"d" * 4095 + b"\r\n", 4095),
        (b"1000\r\n" + b"d" * 4096 + b"\r\n", 0),  # four digits: left to the parser
        (b"C8\r\n" + b"d" * 200 + b"\r\n", 0),  # upper case
        (b"0c8\r\n" + b"d" * 199 + b"\r\n", 0),  # a leading zero
        (b"c8;x\r\n" + b"d" * 198 + b"\r\n", 0),  # an extension
        (b"c8\r\n" + b"d" * 200 + b"\n\r", 0),  # no CRLF at the end
        (b"c8\r\n" + b"d" * 199 + b"\r\n", 0),  # one byte short
        (b"2\r\nab\r\n2\r\ncd\r\n", 0),  # two chunks
        (b"0\r\n\r\n", 0),  # the last chunk
        (b"\r\n", 0),
        (b"", 0),
    ],
)
def test_one_chunk(data: bytes, size: int) -> None:
    """Exactly one non-empty chunk in canonical form, or 0."""
    assert one_chunk(data) == size


class _Transport(asyncio.Transport):
    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def _dechunk(framed: bytes) -> bytes:
    """The payload of a chunked body, by httptools (a complete one, or one cut between chunks)."""
    pieces: list[bytes] = []

    class Proto:
        on_body = pieces.append

    parser = httptools.HttpResponseParser(Proto())
    parser.feed_data(HEAD + framed)
    return b"".join(pieces)


async def _hand_over(reads: list[bytes]) -> list[tuple[bytes, bytes | None]]:
    """What a Connection's sink is handed for these reads of one reply (head included)."""
    conn = Connection(HttpClient(connect_timeout=1.0, idle_timeout=60.0), ("http", "upstream", 80))
    conn.connection_made(_Transport())
    head = asyncio.ensure_future(conn.send(b"POST / HTTP/1.1\r\n\r\n", 60.0))
    await asyncio.sleep(0)
    got: list[tuple[bytes, bytes | None]] = []
    attached = False
    for data in reads:
        conn.data_received(data)
        await asyncio.sleep(0)
        if head.done() and not attached:  # as the relay does, once the head is in
            attached = True
            head.result().attach(lambda piece, framed: got.append((piece, framed)))
    return got


_payload = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b"0", b"5", b"a", b"c8", b";", b"data: x\n\n", b"\xff"]),
    max_size=12,
).map(b"".join)


@st.composite
def _reply(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A chunked reply (odd size lines among the canonical ones), cut anywhere or between chunks."""
    body = b""
    frames = []
    for payload in draw(st.lists(_payload.filter(bool), max_size=8)):
        line = draw(
            st.sampled_from(
                [size_line(len(payload)), b"%X\r\n" % len(payload), b"0%x;e=1\r\n" % len(payload)]
            )
        )
        frames.append(line + payload + b"\r\n")
        body += payload
    raw = HEAD + b"".join(frames) + b"0\r\n\r\n"
    edges = [len(HEAD) + sum(map(len, frames[:n])) for n in range(len(frames) + 1)]
    cuts = sorted(draw(st.lists(st.one_of(st.integers(0, len(raw)), st.sampled_from(edges)), max_size=20)))
    return body, [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True) if b > a]


@settings(max_examples=300, deadline=None)
@given(_reply())
def test_the_pieces_are_the_body_and_each_framed_read_is_its_piece_in_chunks(
    reply: tuple[bytes, list[bytes]],
) -> None:
    """However the reply is cut: the pieces make the body, and a read handed on with its framing
    is whole chunks that hold exactly its piece, so writing it as it came frames the client's
    body as well as framing the piece again would."""
    body, reads = reply
    got = asyncio.run(_hand_over(reads))
    assert b"".join(piece for piece, _ in got) == body
    for piece, framed in got:
        if framed is not None:
            assert _dechunk(framed) == piece
    client = b"".join(framed or size_line(len(piece)) + piece + b"\r\n" for piece, framed in got if piece)
    assert _dechunk(client + b"0\r\n\r\n") == body


def test_a_paced_read_is_handed_on_whole() -> None:
    """Reads of one canonical chunk each, after the head: each piece comes with its read."""
    frames = [size_line(len(p)) + p + b"\r\n" for p in (b"event: a\n\n", b"event: b\n\n")]
    got = asyncio.run(_hand_over([HEAD, *frames, b"0\r\n\r\n"]))
    assert got == [(b"event: a\n\n", frames[0]), (b"event: b\n\n", frames[1])]


def test_a_body_that_is_not_chunked_is_never_taken_for_chunks() -> None:
    """A content-length body whose reads look like chunks is handed on as it is, unframed."""
    look_alike = [b"5\r\nhello\r\n", b"3\r\nabc\r\n"]
    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % sum(map(len, look_alike))
    assert asyncio.run(_hand_over([head, *look_alike])) == [(read, None) for read in look_alike]
