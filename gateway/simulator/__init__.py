"""A faithful fake of the Anthropic Messages API (``claude-gateway simulator``).

The gateway embeds it when no upstream is configured; tests and benchmarks drive it directly.
See ``docs/architecture.md`` (Simulator contract) for scenarios and ``x-simulator-*`` headers.
"""

from __future__ import annotations

from gateway.simulator.app import Simulator, create_simulator_app
from gateway.simulator.config import SimulatorConfig
from gateway.simulator.plan import SCENARIOS
from gateway.simulator.record import Record
from gateway.simulator.server import build_server, serve_simulator, start_embedded

__all__ = (
    "SCENARIOS",
    "Record",
    "Simulator",
    "SimulatorConfig",
    "build_server",
    "create_simulator_app",
    "serve_simulator",
    "start_embedded",
)
