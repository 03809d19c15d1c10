"""The resources one gateway process holds, built and closed by the app lifespan."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litestar import Request
    from prometheus_client import CollectorRegistry

    from gateway.agent.runner import AgentRunner
    from gateway.proxy.relay import RelayHub
    from gateway.proxy.upstream import Upstream
    from gateway.security.auth import KeyAuthenticator
    from gateway.security.limits import Limiter
    from gateway.settings import Settings
    from gateway.telemetry.stream import Telemetry
    from gateway.telemetry.tracing import RecentTraces

__all__ = ("RAW_SEND", "GatewayState", "state_of")

RAW_SEND = "gateway.raw_send"
"""Scope key holding the server's own ``send``, for stream bodies (see ``app.GatewayApp``)."""


@dataclass(slots=True)
class GatewayState:
    """Handles shared by the routes of one process."""

    settings: Settings
    version: str
    registry: CollectorRegistry
    upstream: Upstream
    telemetry: Telemetry
    hub: RelayHub
    auth: KeyAuthenticator
    limiter: Limiter
    recent: RecentTraces | None
    agent: AgentRunner
    started: float = field(default_factory=time.time)


def state_of(request: Request[Any, Any, Any]) -> GatewayState:
    """The process's ``GatewayState`` (set on ``app.state`` by the lifespan)."""
    state: GatewayState = request.app.state.gateway
    return state
