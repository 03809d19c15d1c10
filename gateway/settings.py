"""One frozen, validated settings object, built from the environment at start-up.

Nothing in the package reads ``os.environ`` at import time. ``Settings.from_env`` is the only
place that does, and it is called by the command line (or by tests with a mapping of their own).
A bad value raises ``SettingsError`` whose message is one line naming the variable.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dotenv import dotenv_values

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ("Settings", "SettingsError")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError(f"must be > 0, got {raw!r}")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if value < 0:
        raise ValueError(f"must be >= 0, got {raw!r}")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(f"must be > 0, got {raw!r}")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(f"must be >= 0, got {raw!r}")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {raw!r}")
        return value

    return parse


def _env(name: str, parse: Callable[[str], Any] = str) -> Any:  # noqa: ANN401 - field metadata
    """Declare the environment variable (and its parser) behind a settings field."""
    return {"env": name, "parse": parse}


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the gateway can be told, with defaults fit for a laptop.

    Tests build ``Settings(...)`` directly; the process builds it with ``Settings.from_env()``.
    """

    host: str = field(default="127.0.0.1", metadata=_env("GATEWAY_HOST"))
    """Address to listen on. A non-loopback address needs gateway keys (or ``allow_open``)."""
    port: int = field(default=8000, metadata=_env("GATEWAY_PORT", int))
    """TCP port to listen on."""
    workers: int = field(default=1, metadata=_env("GATEWAY_WORKERS", _positive_int))
    """uvicorn worker processes; metrics switch to multiprocess mode above 1."""

    anthropic_api_key: str = field(default="", repr=False, metadata=_env("ANTHROPIC_API_KEY"))
    """The gateway's own upstream key. Never logged, never sent to a client."""
    anthropic_base_url: str = field(default="", metadata=_env("ANTHROPIC_BASE_URL"))
    """Upstream base URL; empty with no key means the embedded simulator."""

    api_key_hashes: tuple[str, ...] = field(
        default=(), repr=False, metadata=_env("GATEWAY_API_KEY_SHA256", _csv)
    )
    """SHA-256 hex digests of the gateway keys clients may present. Empty: no auth."""
    allow_open: bool = field(default=False, metadata=_env("GATEWAY_ALLOW_OPEN", _bool))
    """Allow listening on a non-loopback address with no gateway keys."""
    cors_origins: tuple[str, ...] = field(default=(), metadata=_env("GATEWAY_CORS_ORIGINS", _csv))
    """Origins allowed by CORS; ``*`` is refused because keys are credentials."""

    max_body_bytes: int = field(
        default=32 * 1024 * 1024, metadata=_env("GATEWAY_MAX_BODY_BYTES", _positive_int)
    )
    """Largest request body accepted (413 above); Anthropic's own limit is 32 MB."""
    model_allowlist: tuple[str, ...] = field(default=(), metadata=_env("GATEWAY_MODEL_ALLOWLIST", _csv))
    """Models clients may ask for. Empty: any."""
    max_tokens_cap: int = field(default=0, metadata=_env("GATEWAY_MAX_TOKENS_CAP", _non_negative_int))
    """Largest ``max_tokens`` accepted (0: no cap)."""
    max_streams: int = field(default=2000, metadata=_env("GATEWAY_MAX_STREAMS", _positive_int))
    """Concurrent streams across the gateway (per process, or shared through Redis)."""
    max_streams_per_key: int = field(
        default=0, metadata=_env("GATEWAY_MAX_STREAMS_PER_KEY", _non_negative_int)
    )
    """Concurrent streams per client key (0: no per-key cap)."""
    rate_limit_per_minute: int = field(
        default=0, metadata=_env("GATEWAY_RATE_LIMIT_PER_MINUTE", _non_negative_int)
    )
    """Requests per minute per client key (0: unlimited)."""

    connect_timeout: float = field(
        default=10.0, metadata=_env("GATEWAY_UPSTREAM_CONNECT_TIMEOUT", _positive_float)
    )
    """Seconds to open a connection to the upstream."""
    upstream_idle_timeout: float = field(
        default=300.0, metadata=_env("GATEWAY_UPSTREAM_IDLE_TIMEOUT", _positive_float)
    )
    """Seconds the upstream may send nothing before the stream is failed and closed."""
    upstream_max_retries: int = field(
        default=2, metadata=_env("GATEWAY_UPSTREAM_MAX_RETRIES", _non_negative_int)
    )
    """Retries of 429/529/5xx/connection errors before anything reached the client."""
    upstream_retry_max_wait: float = field(
        default=20.0, metadata=_env("GATEWAY_UPSTREAM_RETRY_MAX_WAIT", _non_negative_float)
    )
    """Total seconds the retries of one request may wait, ``retry-after`` included."""
    keepalive_seconds: float = field(
        default=15.0, metadata=_env("GATEWAY_KEEPALIVE_SECONDS", _positive_float)
    )
    """Idle seconds before a ``: keepalive`` comment is written to the client."""
    send_timeout: float = field(default=30.0, metadata=_env("GATEWAY_SEND_TIMEOUT", _positive_float))
    """Seconds one write to a client may block before the client is dropped as too slow."""
    drain_seconds: float = field(default=30.0, metadata=_env("GATEWAY_DRAIN_SECONDS", _non_negative_float))
    """On SIGTERM, seconds running streams get to finish before a retryable error."""

    resume_grace_seconds: float = field(
        default=30.0, metadata=_env("GATEWAY_RESUME_GRACE_SECONDS", _non_negative_float)
    )
    """Agent streams keep running this long with no client attached."""
    resume_ttl_seconds: float = field(
        default=600.0, metadata=_env("GATEWAY_RESUME_TTL_SECONDS", _positive_float)
    )
    """How long an agent stream's events stay available for resume after it ends."""
    resume_max_events: int = field(default=10000, metadata=_env("GATEWAY_RESUME_MAX_EVENTS", _positive_int))
    """Events kept per agent stream for resume."""
    agent_max_turns: int = field(default=8, metadata=_env("GATEWAY_AGENT_MAX_TURNS", _positive_int))
    """Default cap on model turns in one agent stream."""
    redis_url: str = field(default="", repr=False, metadata=_env("GATEWAY_REDIS_URL"))
    """Redis for state shared by replicas (limits, tool correlation, resume). Empty: memory."""

    telemetry: bool = field(default=True, metadata=_env("GATEWAY_TELEMETRY", _bool))
    """Spans, metrics and the stream log line. Off only to measure their cost."""
    log_level: str = field(
        default="info", metadata=_env("GATEWAY_LOG_LEVEL", _choice("debug", "info", "warning", "error"))
    )
    """Lowest level logged."""
    log_format: str = field(
        default="auto", metadata=_env("GATEWAY_LOG_FORMAT", _choice("auto", "json", "console"))
    )
    """``auto`` is readable on a TTY and JSON otherwise."""
    capture_content: bool = field(
        default=False, metadata=_env("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", _bool)
    )
    """Record prompt and output text in spans and logs (off unless the operator opts in)."""
    prices_file: str = field(default="", metadata=_env("GATEWAY_PRICES_FILE"))
    """JSON file of model prices that overrides and extends the shipped table."""
    trace_view_size: int = field(default=50, metadata=_env("GATEWAY_TRACE_VIEW_SIZE", _non_negative_int))
    """Recent streams whose spans are kept for the local trace view (0: off)."""
    tool_correlation_ttl: float = field(
        default=3600.0, metadata=_env("GATEWAY_TOOL_CORRELATION_TTL", _positive_float)
    )
    """Seconds a ``tool_use`` id is remembered to time the client's tool run."""
    tool_correlation_max: int = field(
        default=100_000, metadata=_env("GATEWAY_TOOL_CORRELATION_MAX", _positive_int)
    )
    """``tool_use`` ids remembered at most (in memory)."""

    sim_ttft_seconds: float = field(
        default=0.35, metadata=_env("GATEWAY_SIM_TTFT_SECONDS", _non_negative_float)
    )
    """Simulator: delay before the first content delta."""
    sim_tokens_per_second: float = field(
        default=80.0, metadata=_env("GATEWAY_SIM_TOKENS_PER_SECOND", _positive_float)
    )
    """Simulator: output pacing."""
    sim_fast: bool = field(default=False, metadata=_env("GATEWAY_SIM_FAST", _bool))
    """Simulator: no pacing at all (benchmarks)."""

    env_names: ClassVar[dict[str, str]]

    def __post_init__(self) -> None:
        def fail(name: str, why: str) -> None:
            raise SettingsError(f"{self.env_names.get(name, name)}: {why}")

        if not 0 < self.port < 65536 and self.port != 0:
            fail("port", f"not a TCP port: {self.port}")
        for digest in self.api_key_hashes:
            if not _HEX64.match(digest):
                fail("api_key_hashes", "each entry must be a lowercase hex SHA-256 digest")
        if "*" in self.cors_origins:
            fail("cors_origins", "a wildcard origin is refused; list the origins")
        if self.anthropic_base_url and not re.match(r"^https?://[^/\s]+", self.anthropic_base_url):
            fail("anthropic_base_url", f"not an http(s) URL: {self.anthropic_base_url!r}")
        if self.anthropic_base_url and not self.anthropic_api_key:
            # A real upstream without a key would fail every request with a 401.
            host = self.anthropic_base_url.split("://", 1)[1].split("/", 1)[0].split(":")[0]
            if not _is_loopback(host):
                fail("anthropic_api_key", "required when ANTHROPIC_BASE_URL is a remote host")
        if self.prices_file and not Path(self.prices_file).is_file():
            fail("prices_file", f"no such file: {self.prices_file}")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            fail("redis_url", "expected a redis://, rediss:// or unix:// URL")
        if not _is_loopback(self.host) and not self.api_key_hashes and not self.allow_open:
            fail(
                "host",
                f"refusing to listen on {self.host} with no gateway keys; set "
                "GATEWAY_API_KEY_SHA256 or GATEWAY_ALLOW_OPEN=true",
            )

    @property
    def simulated(self) -> bool:
        """True when the embedded simulator stands in for Anthropic."""
        return not self.anthropic_api_key and not self.anthropic_base_url

    @property
    def local_upstream(self) -> bool:
        """True for the embedded simulator or an upstream on loopback (a standalone simulator).

        Only then are ``x-simulator-*`` request headers passed on.
        """
        if self.simulated:
            return True
        host = self.upstream_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
        return _is_loopback(host)

    @property
    def upstream_url(self) -> str:
        """The configured upstream base URL (the simulator's is decided at start-up)."""
        return (self.anthropic_base_url or "https://api.anthropic.com").rstrip("/")

    def with_changes(self, **changes: Any) -> Settings:  # noqa: ANN401 - mirrors dataclasses.replace
        """Return a copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, env_file: str | Path | None = ".env"
    ) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``) over an optional ``.env``.

        Args:
            environ: Variables to read; the process environment when omitted.
            env_file: A dotenv file read first, so real variables win. Missing is fine.

        Raises:
            SettingsError: A value is malformed; the message names the variable.
        """
        merged: dict[str, str] = {}
        if env_file is not None and Path(env_file).is_file():
            merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        merged.update(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata.get("env")
            if name is None or name not in merged:
                continue
            try:
                values[f.name] = f.metadata["parse"](merged[name])
            except ValueError as exc:
                raise SettingsError(f"{name}: {exc}") from None
        return cls(**values)


Settings.env_names = {f.name: f.metadata["env"] for f in fields(Settings) if "env" in f.metadata}


@functools.lru_cache(maxsize=8)  # asked per request, always about the same host
def _is_loopback(host: str) -> bool:
    if host in {"localhost", ""}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
