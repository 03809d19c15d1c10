"""Serve ``create_app`` from a thread on a real socket, with a fresh registry and span exporter.

The app's telemetry handles stay reachable from the test (registry, exporter, app state), while
the client still talks HTTP over a socket, so streaming and disconnects behave as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.settings import Settings
from tests.support.servers import free_port, wait_http

if TYPE_CHECKING:
    from collections.abc import Iterator

    from litestar import Litestar
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = ("InProcessGateway", "serve_in_thread")


@dataclass
class InProcessGateway:
    """A gateway served from a thread, and its telemetry handles."""

    url: str
    app: Litestar
    registry: CollectorRegistry
    exporter: InMemorySpanExporter
    loop: asyncio.AbstractEventLoop

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's value, 0 when absent."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    def spans(self, prefix: str = "") -> list[ReadableSpan]:
        """Finished spans whose name starts with ``prefix``."""
        return [s for s in self.exporter.get_finished_spans() if s.name.startswith(prefix)]

    def wait_for(self, name: str, labels: dict[str, str], value: float, timeout: float = 10.0) -> None:
        """Wait until a sample reaches ``value`` (streams finish just after the client's last read)."""
        deadline = time.monotonic() + timeout
        while self.sample(name, labels) < value:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}{labels} = {self.sample(name, labels)}, expected {value}")
            time.sleep(0.02)

    def state(self) -> Any:
        """The app's ``GatewayState``."""
        return self.app.state.gateway


@contextlib.contextmanager
def serve_in_thread(**overrides: Any) -> Iterator[InProcessGateway]:
    """Run the gateway (embedded simulator unless overridden) on a free port in a thread."""
    settings = Settings(**{"sim_ttft_seconds": 0.05, "sim_tokens_per_second": 400.0, **overrides})
    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(settings, registry=registry, tracer_provider=provider, environ={})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on",
                                           log_config=None, http="httptools"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz")
        yield InProcessGateway(url, app, registry, exporter, loop)
    finally:
        server.should_exit = True
        thread.join(15)
