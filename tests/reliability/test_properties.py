"""Property tests: the SSE decoder and the stream observer give the same answer for any chunking.

Streams are rendered by the simulator's own wire code (text, tool_use, thinking) plus inline
variants: CRLF and CR line endings, multibyte UTF-8, pings, comments, a BOM, and error events.
The oracle for the decoder is ``tests.reliability.support.parse_sse`` (whole-body, independent).
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.proxy.observer import StreamObserver
from gateway.proxy.sse import SSEDecoder
from gateway.simulator.plan import build_plan
from gateway.simulator.request import parse_messages_request
from gateway.simulator.stream import render_events
from tests.reliability.support import parse_sse, sse_event
from tests.support.interpreted import interpreted

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _rendered(scenario: str, tokens: int, *, tools: bool = False) -> bytes:
    body: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 2048, "stream": True,
                            "messages": [{"role": "user", "content": "weather in Zürich ☀️ 東京"}]}
    if tools:
        body["tools"] = [{"name": "get_weather", "input_schema": {
            "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}]
    request = parse_messages_request(json.dumps(body).encode())
    plan = build_plan(request, scenario, tokens, set())
    return b"".join(render_events(plan).events)


def _multibyte() -> bytes:
    texts = ["héllo ", "wörld ", "日本語のテキスト", " 🚀🔥", "\u2028line\u2029sep", "naïve — “quotes”"]
    out = sse_event("message_start", {"type": "message_start", "message": {
        "id": "msg_u", "model": "claude-sonnet-4-5", "usage": {"input_tokens": 11, "output_tokens": 1}}})
    out += b'event: ping\ndata: {"type": "ping"}\n\n'
    out += sse_event("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}})
    for text in texts:
        raw = json.dumps({"type": "content_block_delta", "index": 0,
                          "delta": {"type": "text_delta", "text": text}}, ensure_ascii=False)
        out += b"event: content_block_delta\ndata: " + raw.encode() + b"\n\n"
    out += b": a comment between events\n\n"
    out += sse_event("content_block_stop", {"type": "content_block_stop", "index": 0})
    out += sse_event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                       "usage": {"output_tokens": 17}})
    out += sse_event("message_stop", {"type": "message_stop"})
    return out


def _other_shapes() -> bytes:
    """Legal SSE the observer's byte scans must leave to the decoder: the same figures result."""
    start = {"type": "message_start", "message": {"id": "msg_s", "model": "claude-sonnet-4-5",
                                                   "usage": {"input_tokens": 5, "output_tokens": 1}}}
    delta = b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}'
    out = b"event: message_start\nid: 1\ndata: " + json.dumps(start).encode() + b"\n\n"
    out += b"event:content_block_start\ndata:" + b'{"type":"content_block_start","index":0,'
    out += b'"content_block":{"type":"text","text":""}}\n\n'
    out += (b"event: content_block_delta\ndata: " + delta + b"\n\n") * 3
    out += b"event: content_block_delta\n: a comment inside an event\ndata: " + delta + b"\n\n"
    out += b"event: content_block_delta\ndata: " + delta + b"\nid: 2\n\n"
    out += b"data: {}\n\n"  # no event line: a "message" event
    out += b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\ndata: \"index\":0}\n\n"
    out += b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\n"
    out += b'data: "usage":{"output_tokens":9}}\n\n'
    out += sse_event("message_stop", {"type": "message_stop"})
    return out


def _error_mid_stream() -> bytes:
    head = _rendered("text", 6).split(b"event: content_block_stop", 1)[0]
    return head + sse_event("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                 "message": "Overloaded"}})


_BASE = {
    "text": _rendered("text", 12),
    "tool_use": _rendered("tool_use", 4, tools=True),
    "thinking": _rendered("thinking", 5),
    "multibyte": _multibyte(),
    "shapes": _other_shapes(),
    "error": _error_mid_stream(),
}
STREAMS: dict[str, bytes] = dict(_BASE)
for _name, _raw in _BASE.items():
    STREAMS[f"{_name}-crlf"] = _raw.replace(b"\n", b"\r\n")
    STREAMS[f"{_name}-cr"] = _raw.replace(b"\n", b"\r")
STREAMS["text-bom"] = b"\xef\xbb\xbf" + _BASE["text"]
STREAMS["multibyte-bom-crlf"] = b"\xef\xbb\xbf" + _BASE["multibyte"].replace(b"\n", b"\r\n")


def _event_ends(raw: bytes) -> list[int]:
    return [m.end() for m in re.finditer(rb"\r\n\r\n|\n\n|\r\r", raw)]


@st.composite
def split_stream(draw: st.DrawFn) -> tuple[str, bytes, list[bytes]]:
    """A named stream and an arbitrary split of it into chunks (empty chunks included)."""
    name = draw(st.sampled_from(sorted(STREAMS)))
    raw = STREAMS[name]
    # Anywhere, or where an event ends: a paced upstream's reads are whole events.
    cut = st.one_of(st.integers(0, len(raw)), st.sampled_from(_event_ends(raw)))
    cuts = sorted(draw(st.lists(cut, max_size=60)))
    bounds = [0, *cuts, len(raw)]
    return name, raw, [raw[a:b] for a, b in itertools.pairwise(bounds)]


def _decode(chunks: list[bytes]) -> list[tuple[str, str, str]]:
    decoder = SSEDecoder()
    out = []
    for chunk in chunks:
        out.extend((ev.event, ev.data, ev.id) for ev in decoder.feed(chunk))
    return out


def _observe(chunks: list[bytes]) -> dict[str, Any]:
    obs = StreamObserver()
    for chunk in chunks:
        obs.feed(chunk)
    usage = obs.final_usage()
    return {
        "message_id": obs.message_id, "model": obs.model,
        "usage": (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens),
        "saw_message_delta": obs.saw_message_delta, "stop_reason": obs.stop_reason,
        "error": (obs.error_type, obs.error_message), "completed": obs.completed,
        "deltas": obs.deltas, "events": obs.events, "first_delta": obs.first_delta_at is not None,
        "tools": [(t.index, t.tool_id, t.name, t.stopped is not None) for t in obs.tools],
        "at_boundary": obs.at_boundary,
    }


@SETTINGS
@given(split_stream())
def test_decoder_same_events_for_any_split(case: tuple[str, bytes, list[bytes]]) -> None:
    """SSEDecoder over any chunking yields exactly the events of the whole-body oracle."""
    _, raw, chunks = case
    got = [(event, data) for event, data, _ in _decode(chunks)]
    assert got == parse_sse(raw)


@SETTINGS
@given(split_stream())
def test_observer_same_result_for_any_split(case: tuple[str, bytes, list[bytes]]) -> None:
    """StreamObserver over any chunking gives the result of one whole-body feed."""
    _, raw, chunks = case
    assert _observe(chunks) == _observe([raw])


def _expected(raw: bytes) -> dict[str, Any]:
    """What the stream says, from the oracle's events (independent of the observer)."""
    events = parse_sse(raw)
    out: dict[str, Any] = {"deltas": 0, "completed": False, "stop_reason": None, "error": None,
                           "input": 0, "output": 0, "tools": [], "message_id": "", "events": len(events)}
    for name, data in events:
        payload = json.loads(data)
        if name == "content_block_delta":
            out["deltas"] += 1
        elif name == "message_start":
            out["message_id"] = payload["message"]["id"]
            out["input"] = payload["message"]["usage"]["input_tokens"]
            out["output"] = payload["message"]["usage"]["output_tokens"]
        elif name == "message_delta":
            out["output"] = payload["usage"]["output_tokens"]
            out["stop_reason"] = payload["delta"].get("stop_reason")
        elif name == "message_stop":
            out["completed"] = True
        elif name == "error":
            out["error"] = payload["error"]["type"]
        elif name == "content_block_start" and payload["content_block"]["type"] == "tool_use":
            out["tools"].append(payload["content_block"]["name"])
    return out


@SETTINGS
@given(split_stream())
def test_observer_matches_what_the_stream_says(case: tuple[str, bytes, list[bytes]]) -> None:
    """Usage, deltas, tools, stop reason, completion and error agree with the decoded events."""
    _, raw, chunks = case
    want = _expected(raw)
    obs = StreamObserver()
    for chunk in chunks:
        obs.feed(chunk)
    assert obs.deltas == want["deltas"]
    assert obs.events == want["events"]
    assert obs.completed == want["completed"]
    assert obs.stop_reason == want["stop_reason"]
    assert obs.error_type == want["error"]
    assert obs.message_id == want["message_id"]
    assert obs.usage.input_tokens == want["input"]
    assert obs.final_usage().output_tokens == max(want["output"], 0 if obs.saw_message_delta else want["deltas"])
    assert [t.name for t in obs.tools] == want["tools"]
    assert all(t.stopped is not None for t in obs.tools) == (want["completed"] or not obs.tools)
    assert (obs.first_delta_at is not None) == (want["deltas"] > 0)


@SETTINGS
@given(split_stream())
def test_observer_at_boundary_after_whole_events(case: tuple[str, bytes, list[bytes]]) -> None:
    """After a whole event (any line ending) the relay may write a keepalive: ``at_boundary`` holds.

    A stream ending in CR is complete: the CR ended the blank line. A keepalive written there is
    safe even if an LF follows (it only adds an empty line, which dispatches nothing).
    """
    _, _, chunks = case
    obs = StreamObserver()
    for chunk in chunks:
        obs.feed(chunk)
    assert obs.at_boundary


@SETTINGS
@given(st.lists(st.text(min_size=0, max_size=40), min_size=1, max_size=12), st.data())
def test_arbitrary_text_deltas_roundtrip(texts: list[str], data: st.DataObject) -> None:
    """Any delta text (newlines, CR, 'event:' lines, astral chars) decodes back to itself, however split."""
    raw = b"".join(
        sse_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": t}})
        for t in texts
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=30)))
    bounds = [0, *cuts, len(raw)]
    chunks = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    events = _decode(chunks)
    assert [json.loads(d)["delta"]["text"] for _, d, _ in events] == texts
    obs = StreamObserver()
    for chunk in chunks:
        obs.feed(chunk)
    assert obs.deltas == len(texts)
    assert obs.events == len(texts)


def test_every_byte_its_own_chunk() -> None:
    """The worst split: one byte per chunk, every stream (CR at chunk ends, UTF-8 split mid-character)."""
    for name, raw in STREAMS.items():
        chunks = [raw[i:i + 1] for i in range(len(raw))]
        assert [(e, d) for e, d, _ in _decode(chunks)] == parse_sse(raw), name
        assert _observe(chunks) == _observe([raw]), name


def test_each_event_its_own_chunk() -> None:
    """A paced upstream's split: one whole event per chunk, every stream."""
    for name, raw in STREAMS.items():
        bounds = [0, *_event_ends(raw), len(raw)]
        chunks = [raw[a:b] for a, b in itertools.pairwise(bounds)]
        assert len(chunks) > 10, name
        assert _observe(chunks) == _observe([raw]), name
        assert _observe(chunks)["deltas"] == _expected(raw)["deltas"], name


def test_a_run_of_deltas_is_counted_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk holding a block's deltas between other events counts them in one step, undecoded."""
    observer = interpreted("gateway.proxy.observer").StreamObserver  # its methods can be patched
    counted: list[int] = []
    decoded: list[str] = []
    count_deltas, event = observer._count_deltas, observer._event

    def spy_count(self: StreamObserver, n: int) -> None:
        counted.append(n)
        count_deltas(self, n)

    def spy_event(self: StreamObserver, name: str, data: bytes) -> None:
        decoded.append(name)
        event(self, name, data)

    monkeypatch.setattr(observer, "_count_deltas", spy_count)
    monkeypatch.setattr(observer, "_event", spy_event)
    raw = STREAMS["text"]
    obs = observer()
    obs.feed(raw)
    assert counted == [_expected(raw)["deltas"]]
    assert "content_block_delta" not in decoded
    assert {"message_start", "message_delta", "message_stop"} <= set(decoded)
    assert obs.completed


def test_fixtures_cover_what_they_claim() -> None:
    """The fixture streams do contain tool_use, thinking, pings, errors and multibyte text."""
    assert _expected(STREAMS["tool_use"])["tools"] == ["get_weather"]
    assert b"thinking_delta" in STREAMS["thinking"]
    assert b"event: ping" in STREAMS["text"]
    assert _expected(STREAMS["error"])["error"] == "overloaded_error"
    assert "🚀".encode() in STREAMS["multibyte"]
    assert _expected(STREAMS["multibyte-crlf"])["completed"]
