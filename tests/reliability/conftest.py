"""A standalone simulator and a gateway in front of it, shared by a module's tests.

The simulator runs in its own process so ``/_simulator/stats`` shows what reached the upstream
and when the gateway closed an upstream stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.reliability.support import ANTHROPIC_SECRET
from tests.support.servers import run_gateway, run_simulator

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.servers import ServerProcess

# Pacing of the standalone simulator (x-simulator-* headers reach only the embedded one, so
# scenarios are chosen with the ``[sim:NAME]`` keyword in the prompt).
SIM_ENV = {"GATEWAY_SIM_TTFT_SECONDS": "0.05", "GATEWAY_SIM_TOKENS_PER_SECOND": "40"}

GATEWAY_ENV = {
    "GATEWAY_UPSTREAM_IDLE_TIMEOUT": "1.5",
    "GATEWAY_UPSTREAM_MAX_RETRIES": "2",
    "GATEWAY_UPSTREAM_RETRY_MAX_WAIT": "10",
    "GATEWAY_KEEPALIVE_SECONDS": "0.4",
    "GATEWAY_SEND_TIMEOUT": "5",
}


@pytest.fixture(scope="module")
def sim() -> Iterator[ServerProcess]:
    """The simulator alone."""
    with run_simulator(SIM_ENV) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(sim: ServerProcess) -> Iterator[ServerProcess]:
    """A gateway whose upstream is ``sim``."""
    env = {**GATEWAY_ENV, "ANTHROPIC_BASE_URL": sim.url, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET}
    with run_gateway(env) as server:
        yield server
