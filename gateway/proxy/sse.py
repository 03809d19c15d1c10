"""Pure, incremental Server-Sent Events decoder (WHATWG rules), framed on bytes. No I/O.

It is used to *observe* streams, never to rebuild them: the relay forwards the upstream's bytes
unchanged. Rules followed (html.spec.whatwg.org, "Interpreting an event stream"):

* lines end at CRLF, LF or CR, and a CR at the end of one chunk followed by LF at the start of
  the next is one line ending;
* a UTF-8 BOM at the very start of the stream is dropped once;
* a line starting with ``:`` is a comment; ``field: value`` drops one leading space;
* ``data`` lines are joined with LF; an empty line dispatches the event, unless no ``data``
  line was seen (then only ``id`` may have changed);
* ``id`` containing NUL is ignored; ``retry`` is taken only when it is all ASCII digits;
* an event not ended by a blank line when the stream closes is discarded.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ("SSEDecoder", "ServerSentEvent")

_BOM = b"\xef\xbb\xbf"


class ServerSentEvent(NamedTuple):
    """One dispatched event."""

    event: str
    data: str
    id: str
    retry: int | None


class SSEDecoder:
    """Feed bytes in arbitrary chunks; get back the events completed by each chunk."""

    __slots__ = ("_buf", "_data", "_event", "_last_id", "_pending_cr", "_retry", "_saw_data", "_start")

    def __init__(self) -> None:
        self._buf = b""
        self._start = True
        self._pending_cr = False
        self._event = ""
        self._data: list[str] = []
        self._saw_data = False
        self._last_id = ""
        self._retry: int | None = None

    @property
    def last_event_id(self) -> str:
        """The last ``id`` seen, as a browser's ``lastEventId`` would hold it."""
        return self._last_id

    @property
    def idle(self) -> bool:
        """True when no partial line or event is pending (the stream is at an event boundary).

        A trailing CR does not count: the LF that may follow it only adds an empty line.
        """
        return not self._buf and not self._saw_data and not self._event

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode ``chunk`` and return the events it completed, in order."""
        if not chunk:  # keeps a pending CR pending: the LF may come in the next chunk
            return []
        if self._start:
            chunk = self._strip_bom(chunk)
            if self._start:
                return []
        if self._pending_cr:
            self._pending_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        events: list[ServerSentEvent] = []
        pos = 0
        size = len(buf)
        while pos < size:
            lf = buf.find(b"\n", pos)
            cr = buf.find(b"\r", pos, lf if lf >= 0 else size)
            if cr >= 0:
                end, nxt = cr, cr + 1
                if nxt < size:
                    if buf[nxt] == 0x0A:
                        nxt += 1
                else:
                    self._pending_cr = True
            elif lf >= 0:
                end, nxt = lf, lf + 1
            else:
                break
            self._line(buf[pos:end], events)
            pos = nxt
        self._buf = buf[pos:]
        return events

    def _strip_bom(self, chunk: bytes) -> bytes:
        """Drop a BOM at the very start; hold back a chunk too short to tell."""
        chunk = self._buf + chunk
        self._buf = b""
        if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
            self._buf = chunk
            return b""
        self._start = False
        return chunk[len(_BOM) :] if chunk.startswith(_BOM) else chunk

    def _line(self, raw: bytes, events: list[ServerSentEvent]) -> None:
        if not raw:
            self._dispatch(events)
            return
        line = raw.decode("utf-8", errors="replace")
        if line[0] == ":":
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._saw_data = True
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\x00" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)

    def _dispatch(self, events: list[ServerSentEvent]) -> None:
        if self._saw_data:
            events.append(
                ServerSentEvent(self._event or "message", "\n".join(self._data), self._last_id, self._retry)
            )
        self._event = ""
        self._data = []
        self._saw_data = False
        self._retry = None
