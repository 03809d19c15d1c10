"""Simulator configuration and the per-request pacing it resolves from headers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gateway.settings import Settings

__all__ = ("Pacing", "SimulatorConfig")


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorConfig:
    """How the simulated Anthropic API behaves by default.

    Every pacing value can be overridden per request with ``x-simulator-*`` headers, so one
    simulator serves fast unit tests and realistic benchmarks at the same time.
    """

    ttft_seconds: float = 0.35
    """Delay between ``message_start`` and the first content delta."""
    tokens_per_second: float = 80.0
    """Pace of content deltas after the first one."""
    fast: bool = False
    """No sleeps at all (benchmarks); each event is still its own body message."""
    ping_interval_seconds: float = 10.0
    """A ``ping`` event is sent when this long passed since the last one (long streams)."""
    slow_first_token_seconds: float = 5.0
    """TTFT of the ``slow_first_token`` scenario (``x-simulator-ttft-ms`` still wins)."""
    stall_seconds: float = 3600.0
    """How long the ``stall`` scenario keeps a connection open without sending anything."""
    fault_after_deltas: int = 5
    """Content deltas sent before ``overloaded`` / ``cut`` / ``reset`` / ``stall`` strike."""
    retry_after_seconds: int = 1
    """``retry-after`` of simulated 429 and 529 replies (``x-simulator-retry-after`` wins)."""
    require_api_key: bool = True
    """Answer 401 when neither ``x-api-key`` nor ``Authorization`` is present."""
    record_size: int = 200
    """Recent requests (and early closes) kept for ``GET /_simulator/stats``."""
    organization_id: str = "00000000-0000-4000-8000-00000000c1a0"
    """Value of the ``anthropic-organization-id`` response header."""

    def __post_init__(self) -> None:
        if self.ttft_seconds < 0 or self.slow_first_token_seconds < 0 or self.stall_seconds < 0:
            raise ValueError("simulator delays must be >= 0")
        if self.tokens_per_second <= 0:
            raise ValueError("tokens_per_second must be > 0")
        if self.ping_interval_seconds <= 0:
            raise ValueError("ping_interval_seconds must be > 0")
        if self.record_size < 1:
            raise ValueError("record_size must be >= 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> SimulatorConfig:
        """Build the configuration from the gateway's ``GATEWAY_SIM_*`` settings."""
        return cls(
            ttft_seconds=settings.sim_ttft_seconds,
            tokens_per_second=settings.sim_tokens_per_second,
            fast=settings.sim_fast,
        )


@dataclass(frozen=True, slots=True)
class Pacing:
    """Timing of one response after header overrides were applied."""

    ttft: float
    interval: float
    """Seconds between content deltas (0 in fast mode)."""
    fast: bool
    output_tokens: int | None
    """Requested number of text deltas, or None for the deterministic default."""

    @classmethod
    def resolve(cls, config: SimulatorConfig, headers: Mapping[str, str], scenario: str) -> Pacing:
        """Apply ``x-simulator-*`` overrides to ``config``; bad values raise ``ValueError``."""
        fast = config.fast
        raw_fast = headers.get("x-simulator-fast")
        if raw_fast is not None:
            fast = raw_fast.strip().lower() in {"1", "true", "yes", "on"}
        slow = scenario == "slow_first_token"
        ttft = config.slow_first_token_seconds if slow else config.ttft_seconds
        raw_ttft = headers.get("x-simulator-ttft-ms")
        if raw_ttft is not None:
            ttft = _non_negative(raw_ttft, "x-simulator-ttft-ms") / 1000.0
        tps = config.tokens_per_second
        raw_tps = headers.get("x-simulator-tokens-per-second")
        if raw_tps is not None:
            tps = _non_negative(raw_tps, "x-simulator-tokens-per-second")
            if tps == 0:
                raise ValueError("x-simulator-tokens-per-second: must be > 0")
        tokens: int | None = None
        raw_tokens = headers.get("x-simulator-output-tokens")
        if raw_tokens is not None:
            tokens = int(_non_negative(raw_tokens, "x-simulator-output-tokens"))
        if fast and raw_ttft is None:
            ttft = 0.0
        return cls(ttft=ttft, interval=0.0 if fast else 1.0 / tps, fast=fast, output_tokens=tokens)


def _non_negative(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {raw!r}") from None
    if value < 0 or math.isnan(value):
        raise ValueError(f"{name}: must be >= 0, got {raw!r}")
    return value
