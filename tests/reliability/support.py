"""Helpers for end-to-end tests: a raw HTTP/1.1 streaming client, metrics, logs, a scripted upstream.

The raw client uses a plain socket so the test decides exactly when bytes are read and when the
connection closes (httpx and in-process clients buffer or pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tests.support.fake_upstream import read_request

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.support.servers import ServerProcess

MODEL = "claude-sonnet-4-5"
ANTHROPIC_SECRET = "sk-ant-api03-TOPSECRETupstreamKEY-0123456789abcdefXYZ"


def message_body(
    *, stream: bool = True, max_tokens: int = 1024, text: str = "hello", **extra: Any
) -> dict[str, Any]:
    """A minimal valid Messages API body."""
    return {"model": MODEL, "max_tokens": max_tokens, "stream": stream,
            "messages": [{"role": "user", "content": text}], **extra}


def scenario_body(name: str, **extra: Any) -> dict[str, Any]:
    """A streaming body that asks the simulator for scenario ``name`` by keyword."""
    return message_body(text=f"[sim:{name}] tell me about rivers", **extra)


# --------------------------------------------------------------------------- SSE (test oracle)


def parse_sse(raw: bytes) -> list[tuple[str, str]]:
    """Decode a whole SSE body into (event, data) pairs; comments are dropped.

    Deliberately simple and independent of ``gateway.proxy.sse``: split the whole text into
    lines at CRLF, CR or LF, then dispatch on blank lines (WHATWG rules, minus ``retry``).
    """
    text = raw.decode("utf-8", errors="replace")
    text = text.removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)
    out: list[tuple[str, str]] = []
    event, data, saw = "", [], False
    for line in lines[:-1]:  # the last piece is an unterminated line: never dispatched
        if line == "":
            if saw:
                out.append((event or "message", "\n".join(data)))
            event, data, saw = "", [], False
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
            saw = True
        elif name == "event":
            event = value
    return out


def event_names(raw: bytes) -> list[str]:
    """The event names of an SSE body, in order."""
    return [name for name, _ in parse_sse(raw)]


def last_error(raw: bytes) -> dict[str, Any] | None:
    """The ``error`` object of the last ``event: error`` in ``raw``, if any."""
    errors = [json.loads(data) for name, data in parse_sse(raw) if name == "error"]
    return errors[-1]["error"] if errors else None


# --------------------------------------------------------------------------- raw HTTP client


class RawStream:
    """One HTTP/1.1 request on a plain socket, with the body read incrementally (chunked)."""

    def __init__(self, url: str, path: str, body: bytes | dict[str, Any],
                 headers: dict[str, str] | None = None, *, method: str = "POST",
                 rcvbuf: int | None = None, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        payload = json.dumps(body).encode() if isinstance(body, dict) else body
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        head = [f"{method} {path} HTTP/1.1", f"host: {host}:{port}", "content-type: application/json",
                f"content-length: {len(payload)}", "connection: close"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        self._buf = b""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.chunked = False
        self.ended = False  # terminal zero-length chunk seen
        self.eof = False
        self.closed_at: float | None = None

    def _recv(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self._buf += data
        return True

    def read_head(self) -> int:
        """Read the status line and headers; return the status."""
        while b"\r\n\r\n" not in self._buf:
            if not self._recv():
                raise ConnectionError("closed before the response head")
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        return self.status

    def _decode(self) -> None:
        if not self.chunked:
            self.body += self._buf
            self._buf = b""
            return
        while True:
            line_end = self._buf.find(b"\r\n")
            if line_end < 0:
                return
            size = int(self._buf[:line_end].split(b";")[0], 16)
            if len(self._buf) < line_end + 2 + size + 2:
                return
            start = line_end + 2
            self.body += self._buf[start:start + size]
            self._buf = self._buf[start + size + 2:]
            if size == 0:
                self.ended = True
                return

    def read_until(self, predicate: Callable[[bytes], bool], timeout: float = 10.0) -> bytes:
        """Read until ``predicate(body)`` holds (or the response ends); return the body so far."""
        if not self.status:
            self.read_head()
        deadline = time.monotonic() + timeout
        self._decode()
        while not predicate(self.body) and not self.ended:
            if time.monotonic() > deadline:
                raise TimeoutError(f"predicate not met within {timeout}s; body so far: {self.body[-500:]!r}")
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                if not self._recv():
                    break
            except TimeoutError:
                continue
            self._decode()
        return self.body

    def read_all(self, timeout: float = 30.0) -> bytes:
        """Read to the end of the response (terminal chunk or EOF)."""
        return self.read_until(lambda _: False, timeout)

    def close(self) -> float:
        """Close the connection now; return the wall-clock time it was closed."""
        self.sock.close()
        self.closed_at = time.time()
        return self.closed_at


def deltas_in(body: bytes) -> int:
    """Content deltas in an SSE body."""
    return body.count(b"event: content_block_delta")


# --------------------------------------------------------------------------- metrics and logs

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(url: str) -> str:
    """The gateway's ``/metrics`` text."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        return resp.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match.group(1) != name:
            continue
        have = dict(_LABEL.findall(match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def log_records(server: ServerProcess, event: str | None = None) -> list[dict[str, Any]]:
    """The server's JSON log lines (optionally only those with ``event``)."""
    out = []
    for line in server.log_lines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if event is None or record.get("event") == event:
            out.append(record)
    return out


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


def completed_lines(server: ServerProcess, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Wait for ``count`` ``stream.completed`` lines; return them all."""
    def ready() -> list[dict[str, Any]] | None:
        lines = log_records(server, "stream.completed")
        return lines if len(lines) >= count else None

    return wait_for(ready, timeout)


def sim_stats(sim: ServerProcess) -> dict[str, Any]:
    """The simulator's ``/_simulator/stats``."""
    with urllib.request.urlopen(sim.url + "/_simulator/stats", timeout=5) as resp:
        return json.loads(resp.read())


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


# --------------------------------------------------------------------------- scripted upstream


@dataclass
class Seen:
    """One request the scripted upstream received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    time: float


Handler = "Callable[[asyncio.StreamWriter, Seen], Awaitable[None]]"


@dataclass
class ScriptedUpstream:
    """A tiny HTTP/1.1 server in a thread; each request is answered by the next scripted handler.

    Handlers write raw bytes, so tests can send half an event and drop the connection.
    """

    handlers: list[Any]
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await read_request(reader)
            seen = Seen(request.method, request.path, request.headers, request.body, time.time())
            self.seen.append(seen)
            handler = self.handlers.pop(0) if len(self.handlers) > 1 else self.handlers[0]
            await handler(writer, seen)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[ScriptedUpstream]:
        """Serve on a free loopback port for the duration of the block."""
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop
        holder: dict[str, Any] = {}

        async def main() -> None:
            server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            holder["server"] = server
            self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            ready.set()
            async with server:
                await server.serve_forever()

        thread = threading.Thread(target=lambda: _run_quietly(loop, main()), daemon=True)
        thread.start()
        ready.wait(5)
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(holder["server"].close)
            loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
            thread.join(5)


def _run_quietly(loop: asyncio.AbstractEventLoop, coro: Any) -> None:
    with contextlib.suppress(asyncio.CancelledError, RuntimeError):
        loop.run_until_complete(coro)


def sse_head(extra: str = "") -> bytes:
    """Response head of an SSE reply (no content-length: the body ends when the socket closes)."""
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"request-id: req_scripted\r\nconnection: close\r\n" + extra.encode() + b"\r\n")


def json_reply(status: int, payload: dict[str, Any], extra: str = "") -> bytes:
    """A whole JSON reply."""
    body = json.dumps(payload).encode()
    return (f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"request-id: req_scripted\r\nconnection: close\r\n{extra}\r\n").encode() + body


def sse_event(name: str, payload: dict[str, Any]) -> bytes:
    """One SSE event as Anthropic writes it."""
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def text_stream(texts: list[str], *, stop: bool = True, output_tokens: int | None = None) -> bytes:
    """A complete Anthropic text stream whose deltas are ``texts``."""
    out = sse_event("message_start", {"type": "message_start", "message": {
        "id": "msg_scripted", "type": "message", "role": "assistant", "model": MODEL, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 7, "output_tokens": 1}}})
    out += sse_event("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}})
    for text in texts:
        out += sse_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                 "delta": {"type": "text_delta", "text": text}})
    out += sse_event("content_block_stop", {"type": "content_block_stop", "index": 0})
    if stop:
        out += sse_event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                           "usage": {"output_tokens": output_tokens or len(texts)}})
        out += sse_event("message_stop", {"type": "message_stop"})
    return out


def reply_with(data: bytes, *, delay: float = 0.0) -> Any:
    """A handler that writes ``data`` (after ``delay``) and closes."""

    async def handler(writer: asyncio.StreamWriter, _: Seen) -> None:
        if delay:
            await asyncio.sleep(delay)
        writer.write(data)
        await writer.drain()

    return handler
