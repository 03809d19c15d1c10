"""HTTP/1.1 chunked framing, as the upstream sends it and the client is sent it.

A streamed reply is chunked on both sides, one chunk per SSE event as Anthropic and uvicorn
write it, so a read from the upstream that holds whole chunks is already the bytes the client is
to be written: the relay forwards it as it came (``Connection.data_received``) rather than have
the parser copy each chunk's payload out and the writer frame it again. ``one_chunk`` recognises
the common read (one event, one chunk) by its length and its size line alone, so that such a read
is not parsed at all.
"""

from __future__ import annotations

from typing import Final

__all__ = ("one_chunk", "size_line")

#: The size lines of chunks up to 1 KiB (a delta event is 150 to 300 bytes), made once.
_SIZE_LINES: Final = [b"%x\r\n" % size for size in range(1024)]


def size_line(size: int) -> bytes:
    """The line that opens a chunk of ``size`` bytes: lower-case hex, no leading zero, CRLF."""
    return _SIZE_LINES[size] if size < 1024 else b"%x\r\n" % size


def one_chunk(data: bytes) -> int:
    """The payload size when ``data`` is exactly one non-empty chunk, else 0.

    Exactly one chunk means ``size_line(n)``, ``n`` bytes and CRLF, so its size line is the
    canonical one (no extension, no leading zero; upper-case hex is left to the parser) and its
    payload, whatever it holds, is ``data[-2 - n:-2]``. The caller knows that the parser stands
    between two chunks; bytes that only look like a chunk elsewhere are never tested.
    """
    end = len(data)
    if end < 6 or data[end - 2] != 13 or data[end - 1] != 10:
        return 0
    # The size line ends at the first CR; a payload of up to 4 KiB has at most three hex digits.
    if data[1] == 13:
        digits = 1
    elif data[2] == 13:
        digits = 2
    elif data[3] == 13:
        digits = 3
    else:
        return 0
    size = end - digits - 4
    if size <= 0 or not data.startswith(size_line(size)):
        return 0
    return size
