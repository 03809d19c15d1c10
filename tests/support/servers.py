"""Start real servers for tests: the gateway, the simulator, Redis, each on a free loopback port.

In-process test clients buffer whole responses, so everything about timing, keepalives,
disconnects and incremental delivery is tested against these real processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = (
    "ServerProcess", "free_port", "run_gateway", "run_redis", "run_simulator", "stop_process", "wait_http",
)

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """Return a TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 2xx, or fail with what the process printed."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if 200 <= resp.status < 300:
                    return
        except Exception as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Send ``sig``, wait up to ``timeout``, then kill; return the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@dataclass
class ServerProcess:
    """A server started for a test; ``log`` holds what it printed (stdout and stderr)."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[str]:
        """The printed lines, one entry each."""
        return self.log().splitlines()

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the process to exit; return its exit code."""
        return stop_process(self.proc, sig, timeout)


def _spawn(args: list[str], env: Mapping[str, str], health: str, port: int) -> ServerProcess:
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
        prefix="server-", suffix=".log", delete=False
    )
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    proc = subprocess.Popen(
        args, cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT
    )
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", port, Path(log_file.name), dict(env))
    try:
        wait_http(server.url + health, proc=proc)
    except Exception:
        server.terminate(signal.SIGKILL)
        raise RuntimeError(f"{args} did not start:\n{server.log()}") from None
    return server


@contextlib.contextmanager
def run_gateway(env: Mapping[str, str] | None = None, *, workers: int = 1) -> Iterator[ServerProcess]:
    """Run ``claude-gateway serve`` on a free port with ``env`` added to the environment.

    With no ``ANTHROPIC_*`` variables the gateway embeds its simulator. ``.env`` files are
    ignored (the working directory is the repo, so the test sets ``GATEWAY_ENV_FILE``).
    """
    port = free_port()
    base = {"GATEWAY_LOG_FORMAT": "json", "GATEWAY_ENV_FILE": "", "ANTHROPIC_API_KEY": "",
            "ANTHROPIC_BASE_URL": ""}
    args = [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--workers", str(workers)]
    server = _spawn(args, {**base, **(env or {})}, "/healthz", port)
    try:
        yield server
    finally:
        server.terminate()


@contextlib.contextmanager
def run_simulator(env: Mapping[str, str] | None = None) -> Iterator[ServerProcess]:
    """Run ``claude-gateway simulator`` alone on a free port."""
    port = free_port()
    args = [sys.executable, "-m", "gateway", "simulator", "--port", str(port)]
    server = _spawn(args, {"GATEWAY_ENV_FILE": "", **(env or {})}, "/_simulator/stats", port)
    try:
        yield server
    finally:
        server.terminate()


@contextlib.contextmanager
def run_redis() -> Iterator[str]:
    """Run a throwaway ``redis-server`` on a free port; yield its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; `make test` installs it")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="redis-") as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                    break
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop_process(proc, timeout=10)
