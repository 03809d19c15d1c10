"""The pure SSE decoder against the WHATWG rules, and the observer's fast and slow paths."""

from __future__ import annotations

import pytest

from gateway.proxy.observer import StreamObserver
from gateway.proxy.sse import ServerSentEvent, SSEDecoder


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


@pytest.mark.parametrize("ending", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending(ending: bytes) -> None:
    """LF, CR and CRLF all end lines."""
    raw = b"event: a" + ending + b"data: 1" + ending + ending
    assert decode(raw) == [ServerSentEvent("a", "1", "", None)]


def test_crlf_split_across_chunks() -> None:
    """A CR at the end of one chunk and LF at the start of the next are one line ending."""
    assert decode(b"data: x\r", b"\ndata: y\r", b"\n\r", b"\n") == [ServerSentEvent("message", "x\ny", "", None)]


def test_multibyte_utf8_split() -> None:
    """A character split between chunks decodes whole."""
    raw = "data: Grüße ✓\n\n".encode()
    cut = raw.index("✓".encode()) + 1
    assert decode(raw[:cut], raw[cut:])[0].data == "Grüße ✓"


def test_bom_comments_multiline_id_and_retry() -> None:
    """BOM dropped once, comments ignored, data lines joined, id kept, retry only if digits."""
    raw = b"\xef\xbb\xbf: comment\ndata: a\ndata:b\nid: 7\nretry: 12x\n\nid: 8\n\nretry: 50\ndata\n\n"
    events = decode(raw[:1], raw[1:2], raw[2:])
    assert events == [ServerSentEvent("message", "a\nb", "7", None), ServerSentEvent("message", "", "8", 50)]


def test_id_with_null_is_ignored_and_final_event_without_blank_line_is_dropped() -> None:
    """An id containing NUL does not change lastEventId; an unterminated event never dispatches."""
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 1\ndata: x\n\nid: 2\x003\ndata: y\n\ndata: tail") == [
        ServerSentEvent("message", "x", "1", None), ServerSentEvent("message", "y", "1", None)]
    assert not decoder.idle


ANTHROPIC = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","model":"m",'
    b'"usage":{"input_tokens":10,"output_tokens":1,"cache_read_input_tokens":3}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"tool_use","id":"toolu_1","name":"lookup","input":{}}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"input_json_delta","partial_json":"{\\"event: content_block_delta\\n\\n\\": 1}"}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"input_json_delta","partial_json":""}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use"},'
    b'"usage":{"output_tokens":42}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


@pytest.mark.parametrize("crlf", [False, True])
def test_observer_reads_usage_tools_and_stop(crlf: bool) -> None:
    """Usage is overwritten by message_delta, tool blocks are timed, and text that looks like an event is not one."""
    raw = ANTHROPIC.replace(b"\n", b"\r\n") if crlf else ANTHROPIC
    obs = StreamObserver()
    for i in range(0, len(raw), 7):
        obs.feed(raw[i:i + 7])
    assert (obs.usage.input_tokens, obs.usage.output_tokens, obs.usage.cache_read_tokens) == (10, 42, 3)
    assert obs.deltas == 2
    assert obs.events == 7
    assert [(t.tool_id, t.name) for t in obs.tools] == [("toolu_1", "lookup")]
    assert obs.tools[0].stopped is not None
    assert obs.stop_reason == "tool_use"
    assert obs.completed
    assert obs.first_delta_at is not None
    assert obs.at_boundary


def test_observer_takes_every_usage_figure_and_shrugs_off_odd_ones() -> None:
    """Cache writes (and their 1-hour part) are read; null fields, counts written as strings and
    fields it does not know are taken as Anthropic means them; a figure of the wrong kind costs
    that event's figures, never the stream."""
    obs = StreamObserver()
    obs.feed(
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_2","model":null,'
        b'"content":[{"type":"text","text":"x"}],"usage":{"input_tokens":"7","cache_creation_input_tokens":5,'
        b'"cache_creation":{"ephemeral_5m_input_tokens":1,"ephemeral_1h_input_tokens":4},"service_tier":"standard"}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"output_tokens":{"not":"a count"}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":null},'
        b'"usage":{"output_tokens":9}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    usage = obs.final_usage()
    assert (obs.message_id, obs.model) == ("msg_2", "")
    assert (usage.input_tokens, usage.output_tokens) == (7, 9)
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (5, 4)
    assert obs.saw_message_delta
    assert obs.stop_reason is None  # the event that named it was the malformed one
    assert obs.completed


def test_observer_reads_a_whole_reply() -> None:
    obs = StreamObserver(capture=True)
    obs.observe_message(
        b'{"id":"msg_3","type":"message","model":"m","stop_reason":"max_tokens","content":'
        b'[{"type":"text","text":"hi"},{"type":"tool_use","id":"t","name":"n","input":{}}],'
        b'"usage":{"input_tokens":3,"output_tokens":2,"cache_read_input_tokens":1}}'
    )
    assert (obs.message_id, obs.model, obs.stop_reason, obs.output_text) == ("msg_3", "m", "max_tokens", ["hi"])
    assert (obs.usage.input_tokens, obs.usage.output_tokens, obs.usage.cache_read_tokens) == (3, 2, 1)
    assert obs.completed
    broken = StreamObserver()
    broken.observe_message(b'["not", "a message"]')
    assert not broken.completed


def test_observer_counts_a_cut_stream_as_a_lower_bound() -> None:
    """Without message_delta, the relayed deltas stand in for output tokens."""
    obs = StreamObserver()
    cut = ANTHROPIC.index(b"event: content_block_stop")
    obs.feed(ANTHROPIC[:cut])
    assert obs.final_usage().output_tokens == 2
    assert not obs.completed


def test_observer_counts_a_read_that_ends_inside_a_delta_as_part_of_it() -> None:
    """A delta with a line after its data, read up to one byte into that line: one event, not two.

    The byte after the data line is the start of a field (``xdata``, unknown, ignored) whose
    rest would read as a ``data`` line of an event of its own.
    """
    event = b"event: content_block_delta\ndata: a\nxdata: b\n\n"
    cut = event.index(b"\nxdata") + 2
    obs = StreamObserver()
    obs.feed(event[:cut])
    obs.feed(event[cut:])
    assert (obs.deltas, obs.events) == (1, 1)


@pytest.mark.parametrize(
    ("read", "deltas"),
    [
        (b"event: content_block_delta\ndata: a\n\n", 1),
        (b"event: content_block_delta\ndata:\n\n", 1),  # an empty data line is still data
        (b"event: content_block_delta\ndata: a\ndata: b\n\n", 1),  # two data lines, one event
        (b"event: content_block_delta\ndata: a\n\nevent: content_block_delta\ndata: b\n\n", 2),
        (b"event: content_block_delta\ndata: a\n\nevent: message_stop\ndata: {}\n\n", 1),
        (b"event: content_block_delta\r\ndata: a\r\n\r\n", 1),
    ],
)
def test_a_read_of_one_delta_is_counted_as_the_decoder_counts_it(read: bytes, deltas: int) -> None:
    """A read that begins like a whole delta counts as the decoder counts it (one data line or more)."""
    obs = StreamObserver()
    obs.feed(read)
    assert obs.deltas == deltas
    assert obs.deltas == sum(ev.event == "content_block_delta" for ev in SSEDecoder().feed(read))
