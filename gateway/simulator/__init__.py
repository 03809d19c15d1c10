"""A faithful fake of the Anthropic Messages API (``claude-gateway simulator``).

The gateway embeds it when no upstream is configured; tests and benchmarks drive it directly.

Routes: ``POST /v1/messages`` (SSE or JSON), ``POST /v1/messages/count_tokens``,
``GET /v1/models[/{id}]``, ``GET /_simulator/stats``, ``POST /_simulator/reset``.

Scenario: header ``x-simulator-scenario: NAME`` or ``[sim:NAME]`` in the last user message;
names are in ``SCENARIOS`` (``text``, ``tool_use``, ``thinking``, ``error_400|401|429|500|529``,
``overloaded``, ``cut``, ``reset``, ``stall``, ``slow_first_token``). Without one: tools and no
``tool_result`` → a tool call; thinking enabled → a thinking block first; otherwise text.

Per-request headers: ``x-simulator-ttft-ms``, ``x-simulator-tokens-per-second``,
``x-simulator-output-tokens`` (text deltas; usage ``output_tokens`` equals it for text turns),
``x-simulator-fast: 1|0``, ``x-simulator-retry-after`` (seconds, for 429/529),
``x-simulator-tool-input`` (a JSON object used as the tool input). Scenario ``pause_turn``
answers ``stop_reason: pause_turn`` until the last message is the assistant's own (continued).

Embedding: ``url, stop = await start_embedded(config)`` inside a running loop (port 0, no signal
handlers); standalone: ``run_simulator(config, host, port)`` (blocking) or
``await serve_simulator(...)``.
"""

from __future__ import annotations

from gateway.simulator.app import Simulator, create_simulator_app
from gateway.simulator.config import SimulatorConfig
from gateway.simulator.plan import SCENARIOS
from gateway.simulator.record import Record
from gateway.simulator.server import build_server, run_simulator, serve_simulator, start_embedded

__all__ = (
    "SCENARIOS",
    "Record",
    "Simulator",
    "SimulatorConfig",
    "build_server",
    "create_simulator_app",
    "run_simulator",
    "serve_simulator",
    "start_embedded",
)
