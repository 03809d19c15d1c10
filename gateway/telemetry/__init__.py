"""Observability: metrics, traces, logs, pricing and tool-latency correlation."""

from __future__ import annotations

__all__: tuple[str, ...] = ()
