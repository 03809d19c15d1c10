"""The parts of Anthropic's replies the stream observer reads, as typed ``msgspec`` structs.

Typed, with only the fields read: ``msgspec`` skips the rest of an event (its content, its
text) without building it, where a decode to dicts builds every object. Not strict: a count
written ``"5"`` or ``5.0`` is a count. A field of the wrong kind fails the event's decode
(``ValueError``), which the observer takes as an event without figures.

Not compiled with the rest of ``proxy/`` (``setup.py``): mypyc does not keep the annotations
``msgspec`` builds a struct's fields from.
"""

from __future__ import annotations

import msgspec

__all__ = ("Message", "UsageFigures", "decode_message", "decode_message_delta", "decode_message_start")


class CacheCreation(msgspec.Struct):
    """A ``usage.cache_creation`` object: the cache writes by lifetime."""

    ephemeral_1h_input_tokens: int | None = None


class UsageFigures(msgspec.Struct):
    """A ``usage`` object; a figure it does not carry is None (the previous one stands)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_creation: CacheCreation | None = None


class Message(msgspec.Struct):
    """A message: ``message_start``'s, or a whole non-streaming reply."""

    id: str | None = None
    model: str | None = None
    usage: UsageFigures | None = None
    stop_reason: str | None = None


class MessageStart(msgspec.Struct):
    """A ``message_start`` event's data."""

    message: Message | None = None


class StopReason(msgspec.Struct):
    """A ``message_delta`` event's ``delta``."""

    stop_reason: str | None = None


class MessageDelta(msgspec.Struct):
    """A ``message_delta`` event's data: the stop reason and the cumulative usage."""

    delta: StopReason | None = None
    usage: UsageFigures | None = None


decode_message = msgspec.json.Decoder(Message, strict=False).decode
decode_message_start = msgspec.json.Decoder(MessageStart, strict=False).decode
decode_message_delta = msgspec.json.Decoder(MessageDelta, strict=False).decode
