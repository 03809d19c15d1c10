"""Bytes on the wire: ids, response headers, error bodies and SSE event framing.

Everything here returns ready-to-send ``bytes`` so the streaming loop does no encoding work
of its own; fixed events are module constants built from literals.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import msgspec

__all__ = (
    "CONTENT_BLOCK_STOP",
    "ERROR_STATUS",
    "JSON_CONTENT_TYPE",
    "MESSAGE_STOP",
    "PING",
    "SSE_CONTENT_TYPE",
    "RateHeaders",
    "base_headers",
    "block_stop",
    "delta_event",
    "error_body",
    "error_event",
    "event",
    "json_bytes",
    "new_id",
)

SSE_CONTENT_TYPE = b"text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE = b"application/json"

# The real API writes the ping payload with a space after the colon; keep it byte-identical.
PING = b'event: ping\ndata: {"type": "ping"}\n\n'
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
CONTENT_BLOCK_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'

# HTTP status of each error type the simulator can answer with.
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}

_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_encoder = msgspec.json.Encoder()


def json_bytes(value: object) -> bytes:
    """Compact JSON, like the real API's bodies."""
    return _encoder.encode(value)


def new_id(prefix: str, length: int = 22) -> str:
    """An Anthropic-looking id such as ``msg_01…`` (random: ids must never collide)."""
    bits = random.getrandbits(6 * length)
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[bits % len(_ALPHABET)])
        bits >>= 6
    return f"{prefix}01{''.join(chars)}"


def event(name: str, payload: object) -> bytes:
    """One SSE event: ``event:`` line, one ``data:`` line, blank line."""
    return b"event: " + name.encode() + b"\ndata: " + _encoder.encode(payload) + b"\n\n"


def delta_event(index_prefix: bytes, delta_json: bytes) -> bytes:
    """A ``content_block_delta`` from a pre-encoded ``…"index":N,"delta":`` prefix."""
    return index_prefix + delta_json + b"}\n\n"


def block_stop(index: int) -> bytes:
    """The ``content_block_stop`` event of block ``index``."""
    return CONTENT_BLOCK_STOP + str(index).encode() + b"}\n\n"


def error_body(error_type: str, message: str, request_id: str) -> bytes:
    """The Anthropic error body ``{"type":"error","error":{…},"request_id":…}``."""
    error = {"type": error_type, "message": message}
    return json_bytes({"type": "error", "error": error, "request_id": request_id})


def error_event(error_type: str, message: str, request_id: str) -> bytes:
    """A mid-stream ``event: error`` (the stream ends after it)."""
    return b"event: error\ndata: " + error_body(error_type, message, request_id) + b"\n\n"


class RateHeaders:
    """Rate-limit headers, rebuilt at most once a second (their reset is a timestamp)."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value: list[tuple[bytes, bytes]] = []

    def get(self) -> list[tuple[bytes, bytes]]:
        """The current header list (shared: callers copy it, never mutate it)."""
        now = int(time.time())
        if now != self._second:
            reset = (datetime.fromtimestamp(now, UTC) + timedelta(seconds=60)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ).encode()
            self._value = [
                (b"anthropic-ratelimit-requests-limit", b"4000"),
                (b"anthropic-ratelimit-requests-remaining", b"3999"),
                (b"anthropic-ratelimit-requests-reset", reset),
                (b"anthropic-ratelimit-tokens-limit", b"2000000"),
                (b"anthropic-ratelimit-tokens-remaining", b"1999000"),
                (b"anthropic-ratelimit-tokens-reset", reset),
                (b"anthropic-ratelimit-input-tokens-limit", b"1600000"),
                (b"anthropic-ratelimit-input-tokens-remaining", b"1599000"),
                (b"anthropic-ratelimit-input-tokens-reset", reset),
                (b"anthropic-ratelimit-output-tokens-limit", b"400000"),
                (b"anthropic-ratelimit-output-tokens-remaining", b"399000"),
                (b"anthropic-ratelimit-output-tokens-reset", reset),
            ]
            self._second = now
        return self._value



def base_headers(
    request_id: str, organization_id: bytes, content_type: bytes, rate: RateHeaders
) -> list[tuple[bytes, bytes]]:
    """Headers every simulated reply carries (a fresh list the caller may extend)."""
    headers = [
        (b"content-type", content_type),
        (b"request-id", request_id.encode()),
        (b"anthropic-organization-id", organization_id),
    ]
    headers.extend(rate.get())
    if content_type == SSE_CONTENT_TYPE:
        headers.append((b"cache-control", b"no-cache"))
    return headers
