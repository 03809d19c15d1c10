"""Watch an Anthropic stream's bytes on their way to the client, without changing them.

The hot path is the ``content_block_delta`` event, nearly every event of a stream. A read that
is one whole delta event (a paced stream: the upstream writes one event per chunk, LF line
endings) costs a few byte tests and a ``memchr``; a run of deltas in a bigger read, two
``bytes.count`` calls over the run: no JSON, no event objects. Every other event
(``message_start``, block starts and stops, ``message_delta``, ``error``, ``ping``) is rare:
one in Anthropic's shape (an ``event:`` and a ``data:`` line) is split with byte scans, any other
through the full ``SSEDecoder``, and only the few that carry figures are parsed as JSON
(``message_start`` and ``message_delta`` into structs of just the figures read, ``reply_shapes``).
A stream using CR line endings switches to the decoder for good, so the result is the same as
decoding everything, whatever the chunk boundaries.

Usage follows Anthropic: ``message_start`` carries the first figures and each ``message_delta``
carries cumulative ones that replace them. A stream cut before any ``message_delta`` counts its
relayed deltas as output tokens, a lower bound rather than nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from gateway.proxy.reply_shapes import (
    Message,
    UsageFigures,
    decode_message,
    decode_message_delta,
    decode_message_start,
)
from gateway.proxy.sse import ServerSentEvent, SSEDecoder
from gateway.telemetry.pricing import Usage

__all__ = ("StreamObserver", "ToolBlock")

_DELTA_LINE: Final = b"\nevent: content_block_delta\n"
_DELTA_HEAD: Final = b"event: content_block_delta\n"
_HEAD_LEN: Final = len(_DELTA_HEAD)
_DELTA_DATA: Final = _DELTA_HEAD + b"data:"  # a delta's event line and the start of its data line


@dataclass(slots=True)
class ToolBlock:
    """A ``tool_use`` block seen in the stream (the ``generate`` phase of a tool)."""

    index: int
    tool_id: str
    name: str
    started: float
    stopped: float | None = None


class StreamObserver:
    """Accumulates what a stream says, fed with the relayed bytes.

    Args:
        capture: Keep the output text (content capture, opted in): every event is decoded then.
    """

    # A written __init__, not a dataclass's: mypyc compiles this one, where a dataclass's is
    # generated Python (one made per stream, with the Usage in it, cost 22 k instructions).
    def __init__(self, *, capture: bool = False) -> None:
        self.message_id = ""
        self.model = ""
        self.usage = Usage()
        self.saw_message_delta = False
        self.stop_reason: str | None = None
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.completed = False
        self.deltas = 0
        self.first_delta_at: float | None = None
        self.tools: list[ToolBlock] = []
        self.capture = capture
        self.output_text: list[str] = []
        self._others = 0
        self._tail = b""
        # Every event decoded from the first byte when capturing: the fast path never runs.
        self._decoder: SSEDecoder | None = SSEDecoder() if capture else None

    @property
    def events(self) -> int:
        """Events seen, deltas included."""
        return self.deltas + self._others

    @property
    def at_boundary(self) -> bool:
        """True between events, where a keepalive comment may be written."""
        return not self._tail if self._decoder is None else self._decoder.idle

    def feed(self, chunk: bytes) -> None:
        """Observe one chunk of the upstream's bytes."""
        if (
            not self._tail
            and self._decoder is None
            and chunk.startswith(_DELTA_DATA)
            and chunk.endswith(b"\n\n")
            and 10 not in chunk[_HEAD_LEN:-2]
            and 13 not in chunk
        ):
            # A paced stream: each read is one whole delta event (its event line, one data
            # line, the blank line), counted here without a call. Byte tests only: `startswith`,
            # `endswith` and slices are C primitives once compiled (setup.py), and `10 in` is a
            # memchr where a search for b"\n\n" walks the bytes one by one.
            self.deltas += 1
            if self.first_delta_at is None:
                self.first_delta_at = time.perf_counter()
            return
        self._feed(chunk)

    def _feed(self, chunk: bytes) -> None:
        if self._decoder is not None or 13 in chunk:
            self._slow(chunk)
            return
        data = self._tail + chunk if self._tail else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._tail = data
            return
        end += 2
        whole = data if end == len(data) else data[:end]
        self._tail = data[end:]
        # The deltas of a content block form one run (a reader that fell behind gets many
        # events per chunk, nearly all deltas): the events before the first delta and after
        # the last are decoded, and the run is counted once its boundaries are found to be as
        # many as its delta lines, so that it holds nothing else. Two scans of the run.
        if whole.startswith(_DELTA_HEAD):
            first = 0
        else:
            first = whole.find(_DELTA_LINE) + 1
            if not first:
                self._decode(whole)
                return
        last = max(whole.rfind(_DELTA_LINE) + 1, first)  # where the last delta starts
        after = whole.find(b"\n\n", last) + 2
        deltas = whole.count(_DELTA_LINE, first, after) + 1
        if whole.count(b"\n\n", first, after) == deltas:
            self._decode(whole[:first])
            self._count_deltas(deltas)
            self._decode(whole[after:])
            return
        for block in whole.split(b"\n\n"):  # several runs
            if block.startswith(_DELTA_HEAD):
                self._count_deltas(1)
            elif block:
                self._decode(block + b"\n\n")

    def _decode(self, events: bytes) -> None:
        """Observe whole events (LF line endings), the rare ones around and between the deltas.

        An event written as Anthropic writes it, an ``event:`` line and one ``data:`` line, is
        taken apart with two byte scans; any other shape (comments, ``id:``, several data lines,
        no event name) goes through the full decoder.
        """
        for block in events.split(b"\n\n"):
            head, sep, data = block.partition(b"\ndata: ")
            if sep and head[:7] == b"event: " and len(head) > 7 and 10 not in head and 10 not in data:
                self._event(head[7:].decode("utf-8", "replace"), data)  # positional: no keyword parsing
            elif block:
                self._handle(SSEDecoder().feed(block + b"\n\n"))

    def _count_deltas(self, n: int) -> None:
        if n:
            self.deltas += n
            if self.first_delta_at is None:
                self.first_delta_at = time.perf_counter()

    def _slow(self, chunk: bytes) -> None:
        if self._decoder is None:
            self._decoder = SSEDecoder()
            chunk, self._tail = self._tail + chunk, b""
        self._handle(self._decoder.feed(chunk))

    def _handle(self, events: list[ServerSentEvent]) -> None:
        for ev in events:
            self._event(ev.event, ev.data.encode())

    def _event(self, name: str, data: bytes) -> None:
        if name == "content_block_delta":
            self._count_deltas(1)
            if self.capture:
                self._capture(data)
            return
        self._others += 1
        if name == "message_stop":
            self.completed = True
        elif name == "message_start":
            try:
                start = decode_message_start(data)
            except ValueError:  # msgspec's DecodeError and ValidationError are ones
                return
            if start.message is not None:
                self._message(start.message)
        elif name == "message_delta":
            try:
                delta = decode_message_delta(data)
            except ValueError:
                return
            self.saw_message_delta = True
            self._usage(delta.usage)
            if delta.delta is not None and delta.delta.stop_reason:
                self.stop_reason = delta.delta.stop_reason
        elif self._wants(name, data):
            try:
                payload = msgspec.json.decode(data)
            except ValueError:  # msgspec's DecodeError is one
                return
            if isinstance(payload, dict):
                self._rare(name, payload)

    def _capture(self, data: bytes) -> None:
        try:
            delta = msgspec.json.decode(data).get("delta") or {}
        except (ValueError, AttributeError):
            return
        if delta.get("type") == "text_delta":
            self.output_text.append(str(delta.get("text", "")))

    def _wants(self, name: str, data: bytes) -> bool:
        """Whether an event is worth a JSON parse: most block starts and stops are not."""
        if name == "content_block_start":
            return b"tool_use" in data
        if name == "content_block_stop":
            return any(tool.stopped is None for tool in self.tools)
        return name == "error"

    def _message(self, message: Message) -> None:
        self.message_id = message.id or ""
        self.model = message.model or ""
        self._usage(message.usage)

    def _usage(self, figures: UsageFigures | None) -> None:
        """Take the figures an Anthropic ``usage`` object holds (cumulative: they replace)."""
        if figures is None:
            return
        usage = self.usage
        if figures.input_tokens is not None:
            usage.input_tokens = figures.input_tokens
        if figures.output_tokens is not None:
            usage.output_tokens = figures.output_tokens
        if figures.cache_read_input_tokens is not None:
            usage.cache_read_tokens = figures.cache_read_input_tokens
        if figures.cache_creation_input_tokens is not None:
            usage.cache_write_tokens = figures.cache_creation_input_tokens
        creation = figures.cache_creation
        if creation is not None and creation.ephemeral_1h_input_tokens is not None:
            usage.cache_write_1h_tokens = creation.ephemeral_1h_input_tokens

    def _rare(self, name: str, payload: dict[str, Any]) -> None:
        if name == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") in {"tool_use", "server_tool_use"}:
                self.tools.append(
                    ToolBlock(
                        int(payload.get("index", -1)),
                        str(block.get("id", "")),
                        str(block.get("name", "")),
                        time.perf_counter(),
                    )
                )
        elif name == "content_block_stop":
            index = payload.get("index")
            for tool in self.tools:
                if tool.index == index and tool.stopped is None:
                    tool.stopped = time.perf_counter()
        elif name == "error":
            error = payload.get("error") or {}
            self.error_type = str(error.get("type", "api_error"))
            self.error_message = str(error.get("message", ""))

    def observe_message(self, payload: bytes) -> None:
        """Take id, model, usage and stop reason from a non-streaming reply (one parse per reply)."""
        try:
            message = decode_message(payload)
        except ValueError:
            return
        self._message(message)
        if self.capture:  # the content too, decoded whole only then
            self.output_text = [
                str(b.get("text", ""))
                for b in msgspec.json.decode(payload).get("content") or []
                if isinstance(b, dict) and b.get("type") == "text"
            ]
        self.saw_message_delta = True
        self.stop_reason = message.stop_reason
        self.completed = True

    def final_usage(self) -> Usage:
        """Usage to bill: the reported figures, or a lower bound for a stream cut short."""
        if not self.saw_message_delta and self.deltas > self.usage.output_tokens:
            self.usage.output_tokens = self.deltas
        return self.usage
