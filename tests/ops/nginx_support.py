"""Run the repository's nginx.conf with the real nginx binary, plus tiny fake upstreams.

The config under test is the committed file with only the documented substitution points
changed: the listen address, the upstream ``server`` line and optionally the idle timeouts.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.servers import ROOT, free_port, stop_process

if TYPE_CHECKING:
    from collections.abc import Iterator

NGINX_CONF = ROOT / "nginx.conf"
INDEX_HTML = "<!doctype html><title>claude gateway test frontend</title>"


def nginx_binary() -> str:
    """The installed nginx (``make test`` installs nginx-light)."""
    binary = shutil.which("nginx")
    if binary is None and Path("/usr/sbin/nginx").exists():
        binary = "/usr/sbin/nginx"
    if binary is None:
        raise RuntimeError("nginx is not installed; `make test` installs it")
    return binary


def render_config(
    listen_port: int,
    upstream_ports: list[int],
    *,
    read_timeout: str | None = None,
    send_timeout: str | None = None,
    conf_text: str | None = None,
) -> str:
    """Return nginx.conf with the documented substitution points rewritten."""
    conf = NGINX_CONF.read_text() if conf_text is None else conf_text

    def sub(pattern: str, repl: str) -> None:
        nonlocal conf
        conf, count = re.subn(r"(?m)^(\s*)" + pattern, r"\g<1>" + repl, conf)
        assert count == 1, f"substitution point {pattern!r} found {count} times in nginx.conf"

    sub(r"listen 127\.0\.0\.1:8080;", f"listen 127.0.0.1:{listen_port};")
    servers = "\n        ".join(
        f"server 127.0.0.1:{port} max_fails=0;" for port in upstream_ports
    )
    sub(r"server 127\.0\.0\.1:8000[^;\n]*;", servers)
    if read_timeout is not None:
        sub(r"proxy_read_timeout \S+;", f"proxy_read_timeout {read_timeout};")
    if send_timeout is not None:
        sub(r"send_timeout \S+;", f"send_timeout {send_timeout};")
    return conf


@dataclass
class Nginx:
    """A running nginx; ``url`` is its base URL, ``prefix`` holds its logs."""

    url: str
    prefix: Path
    proc: subprocess.Popen[bytes]

    def error_log(self) -> str:
        """What nginx wrote to its error log."""
        path = self.prefix / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> list[dict[str, Any]]:
        """The JSON access-log records written so far."""
        path = self.prefix / "logs" / "access.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def run_nginx(
    upstream_ports: list[int],
    *,
    read_timeout: str | None = None,
    send_timeout: str | None = None,
) -> Iterator[Nginx]:
    """Start nginx (foreground) with the repo config in a throwaway prefix."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="nginx-") as tmp:
        prefix = Path(tmp)
        prefix.chmod(0o755)  # workers run as an unprivileged user when the tests run as root
        (prefix / "logs").mkdir()
        (prefix / "logs").chmod(0o777)
        (prefix / "frontend").mkdir()
        (prefix / "frontend" / "index.html").write_text(INDEX_HTML)
        (prefix / "nginx.conf").write_text(
            render_config(
                port, upstream_ports, read_timeout=read_timeout, send_timeout=send_timeout
            )
        )
        proc = subprocess.Popen(
            [nginx_binary(), "-p", str(prefix), "-c", "nginx.conf", "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        server = Nginx(f"http://127.0.0.1:{port}", prefix, proc)
        try:
            deadline = time.monotonic() + 10
            while True:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"nginx exited: {err}{server.error_log()}")
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("nginx did not listen within 10 s")
                time.sleep(0.02)
            yield server
        finally:
            stop_process(proc, timeout=10)
            if proc.stderr:
                proc.stderr.close()


@dataclass
class EchoUpstream:
    """An HTTP/1.1 upstream that answers every request with JSON describing it."""

    port: int
    requests: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def run_echo_upstream() -> Iterator[EchoUpstream]:
    """Serve ``{"method", "path", "version", "headers"}`` for any request, recording each."""
    state = EchoUpstream(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body leave as separate writes

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            record = {
                "method": self.command,
                "path": self.path,
                "version": self.request_version,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
            state.requests.append(record)
            body = json.dumps(record).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.send_header("x-request-id", "set-by-upstream")
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            """Stay quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class DroppingUpstream:
    """An upstream that reads a request and closes without answering; counts requests."""

    port: int
    hits: int = 0


@contextlib.contextmanager
def run_dropping_upstream() -> Iterator[DroppingUpstream]:
    """Accept connections, read one request head, close: nginx sees a failed upstream."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    state = DroppingUpstream(port=int(listener.getsockname()[1]))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = b""
                with contextlib.suppress(OSError):
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                if b"\r\n\r\n" in data:
                    state.hits += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(5)
        listener.close()
