"""The upstream HTTP/1.1 client: an asyncio protocol around httptools, with a keep-alive pool.

Why not aiohttp or httpx: the relay's cost per event is the client's cost per chunk. A stream
reader hands each chunk to a waiting task, so every event costs a future, a task switch and a
timer reset before the relay sees it. Here the parser's ``on_body`` callback runs inside
``data_received`` and hands the chunk straight to a sink (the relay writes it to the client in
the same call), so an event costs one parse and one write. ``read()`` and ``next_chunk()`` buffer for
callers that want a plain await (non-streaming replies, the agent loop).

The idle timeout (nothing received for ``idle_timeout`` seconds while a response is awaited or
read) is watched by one timer of the client's, which ticks four times per timeout (or per pool
expiry, if shorter) and has each busy connection count its reads between ticks: no timer per
response, nor a timer reset or a clock read per chunk; it fires up to a period late. The same
tick closes the pooled connections past their expiry. Errors:
``TimeoutError`` for that and for connecting, ``OSError`` (connection refused, reset, a malformed
reply) for the rest; ``Upstream`` maps both to the gateway's tree.

Connections: idle ones are kept per origin for ``_KEEPALIVE_EXPIRY`` seconds, closed by the first
tick after. One the server closed meanwhile is replaced on the spot, as nothing reached it; one
that stays silent for a whole idle timeout is not, as the server may be running the request.
Host names are resolved once per ``_DNS_TTL``; TLS verifies the host name against the system
trust store. No proxy support: the gateway is the proxy, and reaches Anthropic directly.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.proxy.connection import TICKS, Connection, Response

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ("HttpClient", "Response")

_DNS_TTL = 300.0
"""Seconds a host's resolved addresses are reused for new connections."""
_KEEPALIVE_EXPIRY = 15.0
"""Seconds an idle pooled connection is kept (servers closing sooner send a FIN we notice)."""


class HttpClient:
    """HTTP/1.1 to one or more origins, connections kept alive and reused.

    Args:
        connect_timeout: Seconds to open a connection (TLS included).
        idle_timeout: Seconds without a byte from the upstream before a response fails.
        max_idle: Idle connections kept per origin.
        ssl_context: For ``https`` origins (default: the system trust store).
    """

    def __init__(
        self,
        *,
        connect_timeout: float,
        idle_timeout: float,
        max_idle: int = 256,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._dns: dict[str, tuple[float, list[str]]] = {}
        self._closed = False
        #: Seconds between two ticks of the connections' watchdog.
        self.period = min(idle_timeout, _KEEPALIVE_EXPIRY) / TICKS
        # A timer of each response's own and one of each pooled connection's (armed, cancelled)
        # cost 9 k instructions a stream; one for all of them ticks over these and the pool.
        self._busy: set[Connection] = set()
        self._ticker: asyncio.TimerHandle | None = None

    async def request(
        self, method: str, url: str, headers: Iterable[tuple[bytes, bytes]], body: bytes | None = None
    ) -> Response:
        """Send one request and return once the response's head has arrived.

        ``headers`` are (name, value) byte pairs, written as they are.
        """
        origin, netloc, target = _split(url)
        tls = origin[0] == "https"
        lines = [f"{method} {target} HTTP/1.1\r\nhost: {netloc}".encode("latin-1")]
        lines += [name + b": " + value for name, value in headers]  # `%` formatting: four times dearer
        if body is not None or method in {"POST", "PUT", "PATCH"}:
            lines.append(b"content-length: " + str(len(body or b"")).encode())
        head = b"\r\n".join(lines)
        if head.count(b"\n") != len(lines) or head.count(b"\r") != len(lines):
            raise ValueError("a header contains a line break")
        payload = head + b"\r\n\r\n" + (body or b"")
        while True:
            conn, reused = self._take(origin), True
            if conn is None:
                conn, reused = await self._connect(origin, tls=tls), False
            try:
                return await conn.send(payload, self.idle_timeout)
            except OSError as exc:
                # A kept-alive connection the server closed meanwhile: nothing reached it. Not
                # one that stayed silent for a whole idle timeout: the server may be working on
                # the request, and a second copy would run (and be billed) twice.
                if isinstance(exc, TimeoutError) or not (reused and conn.nothing_received):
                    raise

    async def close(self) -> None:
        """Close the idle connections; later releases close theirs."""
        self._closed = True
        if self._ticker is not None and not self._busy:  # responses still read keep their watchdog
            self._ticker.cancel()
            self._ticker = None
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    def _take(self, origin: tuple[str, str, int]) -> Connection | None:
        conns = self._idle.get(origin)
        while conns:
            conn = conns.pop()
            if conn.reusable:
                return conn
        return None

    def _put(self, conn: Connection) -> None:
        conns = self._idle.setdefault(conn.origin, [])
        if self._closed or len(conns) >= self.max_idle:
            conn.close()
            return
        conns.append(conn)
        conn.idle_since = asyncio.get_running_loop().time()
        self._arm()

    def watch(self, conn: Connection) -> None:
        """Tick ``conn``'s idle watchdog until it is unwatched (its response is over)."""
        self._busy.add(conn)
        self._arm()

    def unwatch(self, conn: Connection) -> None:
        """Stop ticking ``conn`` (idempotent)."""
        self._busy.discard(conn)

    def _arm(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().call_later(self.period, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        for conn in tuple(self._busy):  # a copy: a tick may fail its connection
            conn.tick()
        pooled = False
        deadline = asyncio.get_running_loop().time() - _KEEPALIVE_EXPIRY
        for conns in self._idle.values():
            for conn in [c for c in conns if c.idle_since <= deadline]:
                conns.remove(conn)
                conn.close()
            pooled = pooled or bool(conns)
        if self._busy or pooled:
            self._arm()

    def _drop(self, conn: Connection) -> None:
        conns = self._idle.get(conn.origin)
        if conns and conn in conns:
            conns.remove(conn)
        conn.close()

    async def _connect(self, origin: tuple[str, str, int], *, tls: bool) -> Connection:
        loop = asyncio.get_running_loop()
        if tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        host, port = origin[1], origin[2]
        async with asyncio.timeout(self.connect_timeout):
            addresses = await self._resolve(host, port)
            failure: OSError = OSError(f"{host} has no address")
            for address in addresses:  # in resolver order, the next one if one refuses
                try:
                    _, conn = await loop.create_connection(
                        lambda: Connection(self, origin), address, port,
                        ssl=self._ssl if tls else None, server_hostname=host if tls else None,
                    )
                except OSError as exc:
                    failure = exc
                else:
                    return conn
            self._dns.pop(host, None)
            raise failure

    async def _resolve(self, host: str, port: int) -> list[str]:
        """The host's addresses, remembered for ``_DNS_TTL`` seconds.

        Without the memory, a burst of new streams queues one resolver call each on the loop's
        thread pool before its first byte goes out.
        """
        loop = asyncio.get_running_loop()
        cached = self._dns.get(host)
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        self._dns[host] = (loop.time() + _DNS_TTL, addresses)
        return addresses


@functools.lru_cache(maxsize=256)  # the gateway asks for the same few URLs all day
def _split(url: str) -> tuple[tuple[str, str, int], str, str]:
    """(scheme, host, port), the ``host`` header, and the request target of ``url``."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (parts.scheme, parts.hostname or "", port), parts.netloc, target
