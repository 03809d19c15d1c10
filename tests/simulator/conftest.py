"""Run the simulator under a real uvicorn server on a free loopback port."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import anthropic
import httpx
import pytest

from gateway.simulator import SimulatorConfig, build_server, start_embedded

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

MODEL = "claude-opus-5-5"


@pytest.fixture(scope="session")
def sim_url() -> Iterator[str]:
    """A fast simulator for the session (no pacing unless a test asks for it by header).

    It runs in a thread with its own loop so every test's event loop can use it; tests that
    read ``/_simulator/stats`` find their own entries by request id.
    """
    server = build_server(SimulatorConfig(fast=True, fault_after_deltas=3), port=0,
                          embedded=True)
    thread = threading.Thread(target=server.run, name="simulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "simulator thread died"
        assert time.monotonic() < deadline, "simulator did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
async def own_sim() -> AsyncIterator[str]:
    """A private simulator in the test's own loop, via ``start_embedded``."""
    url, stop = await start_embedded(SimulatorConfig(fast=True))
    try:
        yield url
    finally:
        await stop()


@pytest.fixture
async def client(sim_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The official SDK pointed at the simulator, without retries."""
    sdk = anthropic.AsyncAnthropic(base_url=sim_url, api_key="sk-test", max_retries=0)
    try:
        yield sdk
    finally:
        await sdk.close()


@pytest.fixture
async def http(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A raw HTTP client with credentials, for byte-level checks."""
    async with httpx.AsyncClient(base_url=sim_url, headers={"x-api-key": "sk-test"},
                                 timeout=10) as h:
        yield h


def body(text: str = "Hello there, how does streaming work?", **extra: object) -> dict[str, object]:
    """A minimal valid /v1/messages body."""
    return {"model": MODEL, "max_tokens": 1024, "stream": True,
            "messages": [{"role": "user", "content": text}], **extra}
