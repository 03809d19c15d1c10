r"""SSE framing of the agent event timeline: pure functions, no I/O.

Every agent event is one SSE block::

    id: <stream_id>:<seq>
    event: <name>
    data: <compact JSON object>

Why this is safe against injected events: the payload is one JSON object encoded by
``msgspec``, and JSON never contains a raw CR or LF (both are escaped inside strings and no
whitespace is emitted between tokens). So text from Claude or from a tool — even text like
``"\n\nevent: done"`` — cannot end the ``data:`` line early or start a forged field. The
encoder still checks for CR/LF, because that property is the whole security argument.
U+2028/U+2029 are not SSE line terminators and may pass through unescaped.

Event ids are ``<stream_id>:<seq>``: short ASCII, CORS-safe as ``Last-Event-ID`` (no
preflight below 128 bytes). ``parse_event_id`` reads them back and returns ``None`` for
anything else, so a garbage header is just "no resume point".

Public API:
    * ``EVENT_NAMES`` — the contract's event names (PRODUCT.md, "Agent stream events").
    * ``encode_event(stream_id, seq, event, data) -> bytes``
    * ``encode_retry(ms) -> bytes`` — a ``retry:`` field to put before the first event.
    * ``KEEPALIVE`` — the ``: keepalive`` comment block.
    * ``new_stream_id() -> str``, ``format_event_id(stream_id, seq) -> str``,
      ``parse_event_id(value) -> tuple[str, int] | None``.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any, Final

import msgspec

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = (
    "EVENT_NAMES",
    "KEEPALIVE",
    "encode_event",
    "encode_retry",
    "format_event_id",
    "new_stream_id",
    "parse_event_id",
)

EVENT_NAMES: Final = frozenset(
    {
        "start", "token", "thinking", "tool_start", "tool_input", "tool_executing",
        "tool_result", "block_stop", "turn", "usage", "error", "done", "stream_end",
    }
)
"""Every event name the contract allows; anything else is a programming error."""

KEEPALIVE: Final = b": keepalive\n\n"
"""An SSE comment block: keeps proxies from closing an idle stream, fires no event."""

_STREAM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SEQ = re.compile(r"[0-9]{1,18}")
_MAX_SEQ = 10**18 - 1
# The "event:" and "data:" prefix per name, built once: the token event is the hot path.
_HEADS: Final = {name: f"\nevent: {name}\ndata: ".encode() for name in EVENT_NAMES}
_encode_json = msgspec.json.Encoder().encode


def new_stream_id() -> str:
    """Return a fresh unguessable stream id (24 URL-safe characters, 144 random bits)."""
    return secrets.token_urlsafe(18)


def format_event_id(stream_id: str, seq: int) -> str:
    """Return the SSE ``id`` of event ``seq`` of ``stream_id`` (``<stream_id>:<seq>``).

    Raises:
        ValueError: The stream id is not 1-64 of ``[A-Za-z0-9_-]`` or ``seq`` is out of range.
    """
    if not _STREAM_ID.fullmatch(stream_id):
        raise ValueError("stream id must be 1-64 characters of [A-Za-z0-9_-]")
    if not 0 <= seq <= _MAX_SEQ:
        raise ValueError(f"seq out of range: {seq}")
    return f"{stream_id}:{seq}"


def parse_event_id(value: str | None) -> tuple[str, int] | None:
    """Read a ``Last-Event-ID`` back into ``(stream_id, seq)``.

    Args:
        value: The header value as received (surrounding whitespace is ignored).

    Returns:
        The pair, or ``None`` when the value is missing or not an id this module wrote.
    """
    if not value or len(value) > 128:
        return None
    stream_id, sep, seq = value.strip().rpartition(":")
    if not sep or not _STREAM_ID.fullmatch(stream_id) or not _SEQ.fullmatch(seq):
        return None
    return stream_id, int(seq)


def encode_event(stream_id: str, seq: int, event: str, data: Mapping[str, Any]) -> bytes:
    r"""Frame one agent event as SSE bytes.

    Args:
        stream_id: The agent stream's id (see ``new_stream_id``).
        seq: The event's position in the stream, from 0, strictly increasing.
        event: One of ``EVENT_NAMES``.
        data: A JSON-serialisable mapping; it becomes the single ``data:`` line.

    Returns:
        ``id: …\nevent: …\ndata: …\n\n`` as UTF-8 bytes.

    Raises:
        ValueError: Unknown event name, malformed id, or data that is not JSON-serialisable.
    """
    head = _HEADS.get(event)
    if head is None:
        raise ValueError(f"unknown agent event: {event!r}")
    try:
        body = _encode_json(data)
    except (TypeError, msgspec.EncodeError) as exc:
        raise ValueError(f"event data is not JSON-serialisable: {exc}") from None
    if not body.startswith(b"{"):
        raise ValueError("event data must be a JSON object")
    # Never true for JSON; checked because it is what keeps tool text from forging events.
    if b"\n" in body or b"\r" in body:  # pragma: no cover - defensive
        raise ValueError("encoded event data contains a line break")
    return b"id: " + format_event_id(stream_id, seq).encode() + head + body + b"\n\n"


def encode_retry(milliseconds: int) -> bytes:
    """Return a ``retry:`` field line; write it just before the first event's ``id:`` line.

    Raises:
        ValueError: ``milliseconds`` is negative.
    """
    if milliseconds < 0:
        raise ValueError("retry must be >= 0 ms")
    return b"retry: %d\n" % milliseconds
