"""Processes under test: start, pin to a core, sample CPU time and RSS from ``/proc``, stop.

CPU is read from ``/proc/<pid>/stat`` (``utime + stime``, all threads) summed over the process
tree, so a multi-worker uvicorn or an nginx master with its workers count as one figure.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = (
    "Proc", "cpu_seconds", "free_port", "nginx_binary", "pin", "repo_nginx_conf", "rss_bytes",
    "start_gateway", "start_nginx", "start_python_leg", "start_simulator", "tree",
)

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            raw = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(raw.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    kids = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds consumed so far by each of ``pids`` (gone processes left out)."""
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / _TICKS
    return out


def rss_bytes(pids: list[int]) -> int:
    """Resident set size of ``pids``, summed."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    return total


def pin(pids: list[int], cores: set[int] | None) -> None:
    """Restrict ``pids`` to ``cores`` (None or a single-core machine: leave alone)."""
    if not cores or not hasattr(os, "sched_setaffinity"):
        return
    for pid in pids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cores)


@dataclass
class Proc:
    """A started server: its process, URL, and where its output goes."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    cleanup: list[Path] = field(default_factory=list)

    def pids(self) -> list[int]:
        """The process tree (workers included)."""
        return tree(self.proc.pid)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the process printed."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; remove temp files."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _wait_http(proc: Proc, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(proc.url + path, timeout=1) as resp:  # noqa: S310 - loopback
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return  # it answers (401 from the simulator without a key is fine)
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"{proc.name} did not answer {path} within {timeout:g}s:\n{proc.log_tail()}")


def _spawn(name: str, args: list[str], env: dict[str, str], port: int, health: str) -> Proc:
    fd, log_name = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        popen = subprocess.Popen(  # noqa: S603 - our own interpreter or the installed nginx
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **env}, cwd=ROOT,
        )
    proc = Proc(name, popen, f"http://127.0.0.1:{port}", Path(log_name), [Path(log_name)])
    _wait_http(proc, health)
    return proc


def start_simulator() -> Proc:
    """``claude-gateway simulator --fast`` on a free port (requests set their own pacing)."""
    port = free_port()
    args = [sys.executable, "-m", "gateway", "simulator", "--port", str(port), "--fast"]
    return _spawn("simulator", args, {"GATEWAY_ENV_FILE": ""}, port, "/_simulator/stats")


def start_gateway(upstream: str, *, telemetry: bool, workers: int, max_streams: int) -> Proc:
    """``claude-gateway serve`` proxying to ``upstream``, its log going to a temp file."""
    port = free_port()
    env = {
        "ANTHROPIC_BASE_URL": upstream, "ANTHROPIC_API_KEY": "sk-bench", "GATEWAY_ENV_FILE": "",
        "GATEWAY_TELEMETRY": "true" if telemetry else "false", "GATEWAY_LOG_FORMAT": "json",
        "GATEWAY_MAX_STREAMS": str(max_streams), "GATEWAY_API_KEY_SHA256": "",
        "GATEWAY_RATE_LIMIT_PER_MINUTE": "0", "GATEWAY_MAX_STREAMS_PER_KEY": "0",
    }
    args = [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--workers", str(workers)]
    return _spawn(f"gateway{'' if telemetry else '-notel'}-w{workers}", args, env, port, "/healthz")


#: The Python reference legs: ``--floor``'s kind → (module, process name).
_PYTHON_LEGS = {
    "floor": ("gateway.bench.floor_relay", "python-floor"),
    "relay": ("gateway.bench.asgi_relay", "python-relay"),
}


def start_python_leg(kind: str, upstream: str) -> Proc:
    """A Python reference leg (``floor``: the TCP splice; ``relay``: the minimal ASGI relay)."""
    module, name = _PYTHON_LEGS[kind]
    port = free_port()
    args = [sys.executable, "-m", module, str(port), upstream.rsplit(":", 1)[1]]
    return _spawn(name, args, {}, port, "/v1/models")


def nginx_binary() -> str | None:
    """The nginx executable, if installed."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None)


_BARE_CONF = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    upstream sim {{ server 127.0.0.1:{upstream_port}; keepalive 512; }}
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        location / {{
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


def repo_nginx_conf() -> Path | None:
    """The repository's ``nginx.conf``, when present."""
    path = ROOT / "nginx.conf"
    return path if path.is_file() else None


def _repo_conf(upstream_port: int, port: int) -> str:
    """The repo's nginx.conf with bench ports, one worker, and the per-IP limits taken out."""
    text = repo_nginx_conf().read_text()  # type: ignore[union-attr]
    text = text.replace("listen 127.0.0.1:8080", f"listen 127.0.0.1:{port} backlog=8192")
    text = text.replace("server 127.0.0.1:8000", f"server 127.0.0.1:{upstream_port}")
    text = re.sub(r"(?m)^worker_processes\s+\S+;", "worker_processes 1;\ndaemon off;", text)
    # One load-generator address would hit the per-IP abuse limits meant for real clients.
    text = re.sub(r"(?m)^\s*limit_req\s+zone=.*;\n", "", text)
    text = re.sub(r"(limit_conn\s+\S+)\s+\d+;", r"\1 60000;", text)
    return re.sub(r"worker_connections\s+\d+;", "worker_connections 16384;", text)


def start_nginx(upstream: str, *, repo_conf: bool) -> Proc:
    """Start nginx proxying to ``upstream``: a bare ``proxy_pass`` or the repo's nginx.conf."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed")
    port, upstream_port = free_port(), int(upstream.rsplit(":", 1)[1])
    prefix = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    if repo_conf:
        (prefix / "logs").mkdir()
        (prefix / "frontend").symlink_to(ROOT / "frontend")
        conf = _repo_conf(upstream_port, port)
    else:
        conf = _BARE_CONF.format(prefix=prefix, upstream_port=upstream_port, port=port)
    (prefix / "nginx.conf").write_text(conf)
    args = [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "err.log")]
    name = "gateway+nginx" if repo_conf else "nginx"
    proc = _spawn(name, args, {}, port, "/healthz" if repo_conf else "/v1/models")
    proc.cleanup.append(prefix)
    return proc
