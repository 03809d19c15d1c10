"""Agent SSE framing: exact bytes, id round trips, and no event forging by payload text."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.agent.events import (
    EVENT_NAMES,
    KEEPALIVE,
    encode_event,
    encode_retry,
    format_event_id,
    new_stream_id,
    parse_event_id,
)

CONTRACT = {
    "start", "token", "thinking", "tool_start", "tool_input", "tool_executing", "tool_result",
    "block_stop", "turn", "usage", "error", "done", "stream_end",
}


def sse_decode(raw: bytes) -> list[dict[str, str]]:
    """A minimal WHATWG SSE parser: CR, LF and CRLF end lines; one leading space is stripped."""
    events: list[dict[str, str]] = []
    data: list[str] = []
    event_type = ""
    last_id = ""
    for line in re.split(r"\r\n|\r|\n", raw.decode("utf-8"))[:-1]:
        if line == "":
            if data:
                events.append({"event": event_type or "message", "data": "\n".join(data),
                               "id": last_id})
            data, event_type = [], ""
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            last_id = value
    return events


def test_event_names_are_the_contract_set() -> None:
    assert EVENT_NAMES == CONTRACT


def test_encode_event_exact_bytes() -> None:
    raw = encode_event("abc_1", 7, "token", {"text": "hé\nllo"})
    assert raw == b'id: abc_1:7\nevent: token\ndata: {"text":"h\xc3\xa9\\nllo"}\n\n'


def test_stream_end_and_retry_and_keepalive() -> None:
    raw = encode_retry(3000) + encode_event("s", 0, "stream_end", {})
    assert raw == b"retry: 3000\nid: s:0\nevent: stream_end\ndata: {}\n\n"
    assert sse_decode(KEEPALIVE) == []
    assert sse_decode(raw) == [{"event": "stream_end", "data": "{}", "id": "s:0"}]
    with pytest.raises(ValueError):
        encode_retry(-1)


@pytest.mark.parametrize(
    ("stream_id", "seq", "event", "data"),
    [
        ("s", 0, "message", {}),
        ("s", 0, "Token", {}),
        ("bad:id", 0, "token", {}),
        ("", 0, "token", {}),
        ("s" * 65, 0, "token", {}),
        ("s", -1, "token", {}),
        ("s", 0, "token", {"x": object()}),
        ("s", 0, "token", ["not", "an", "object"]),
    ],
)
def test_encode_event_rejects(stream_id: str, seq: int, event: str, data: object) -> None:
    with pytest.raises(ValueError):
        encode_event(stream_id, seq, event, data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [None, "", ":", "abc", "abc:", ":5", "abc:-1", "abc:1.5", "abc:x", "a b:1", "abc:1:",
     "abc:\u0661", "a" * 200 + ":1", "abc:" + "9" * 19, "abc\0:1", "é:1"],
)
def test_parse_event_id_rejects_garbage(value: str | None) -> None:
    assert parse_event_id(value) is None


def test_parse_event_id_round_trip() -> None:
    sid = new_stream_id()
    assert parse_event_id(format_event_id(sid, 42)) == (sid, 42)
    assert parse_event_id(f"  {sid}:0 ") == (sid, 0)
    assert sid != new_stream_id()


@given(
    text=st.one_of(
        st.text(),
        st.sampled_from(["\n", "\r", "\r\n", "event: x", "\n\nid: 1", "\n\ndata: {}\n\n",
                         "\u2028\u2029\x85", "\0", ": keepalive\n\n"]),
    ),
    seq=st.integers(min_value=0, max_value=10**18 - 1),
    event=st.sampled_from(sorted(CONTRACT)),
)
def test_arbitrary_text_decodes_to_exactly_one_event(text: str, seq: int, event: str) -> None:
    data = {"text": text, "nested": {"output": text + "\r\nevent: done\n\n"}}
    raw = encode_event("stream-1", seq, event, data)
    assert raw.count(b"\n\n") == 1
    assert raw.endswith(b"\n\n")
    assert b"\r" not in raw
    decoded = sse_decode(raw)
    assert len(decoded) == 1
    assert decoded[0]["event"] == event
    assert decoded[0]["id"] == f"stream-1:{seq}"
    assert json.loads(decoded[0]["data"]) == data
