"""Run the simulator under uvicorn: standalone (``claude-gateway simulator``) or embedded.

Embedded means inside the gateway's own event loop, as a task started from its lifespan, on an
ephemeral loopback port. There uvicorn must not touch signal handlers: they belong to the
gateway's own server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import uvicorn

from gateway.simulator.app import create_simulator_app
from gateway.simulator.stream import SimulatedResetError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator

    from gateway.simulator.config import SimulatorConfig

__all__ = ("build_server", "run_simulator", "serve_simulator", "start_embedded")


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _DropSimulatedResets(logging.Filter):
    """Keep the deliberate ``reset`` scenario out of uvicorn's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SimulatedResetError)


def _quiet_resets() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropSimulatedResets) for f in logger.filters):
        logger.addFilter(_DropSimulatedResets())


def build_server(config: SimulatorConfig, host: str = "127.0.0.1", port: int = 9100, *,
                 embedded: bool = False) -> uvicorn.Server:
    """A uvicorn server (not started) running a fresh simulator app.

    Args:
        config: Simulator behaviour.
        host: Address to bind.
        port: Port to bind; 0 picks a free one (read it from ``server.servers``).
        embedded: Leave signal handlers alone and stop quickly (streams such as ``stall`` would
            otherwise hold shutdown for their whole duration).
    """
    _quiet_resets()
    app = create_simulator_app(config)
    uv_config = uvicorn.Config(
        app, host=host, port=port, lifespan="off", log_level="warning", http="httptools",
        access_log=False, timeout_graceful_shutdown=1 if embedded else 5,
        # Thousands of concurrent benchmark streams: no per-server connection cap, deep backlog.
        backlog=4096, timeout_keep_alive=30,
    )
    return _EmbeddedServer(uv_config) if embedded else uvicorn.Server(uv_config)


async def serve_simulator(config: SimulatorConfig, host: str = "127.0.0.1", port: int = 9100,
                          *, ready: asyncio.Event | None = None) -> None:
    """Serve the simulator until the process is told to stop (SIGINT/SIGTERM).

    Args:
        config: Simulator behaviour.
        host: Address to bind.
        port: Port to bind.
        ready: Set once the socket is listening.
    """
    server = build_server(config, host, port)
    task = asyncio.ensure_future(server.serve())
    if ready is not None:
        await _wait_started(server, task)
        ready.set()
    await task


def run_simulator(config: SimulatorConfig, host: str = "127.0.0.1", port: int = 9100) -> None:
    """Blocking entry point for ``claude-gateway simulator``: owns the loop (uvloop if present).

    SIGINT/SIGTERM stop it gracefully, as with any uvicorn server.
    """
    build_server(config, host, port).run()


async def start_embedded(
    config: SimulatorConfig, host: str = "127.0.0.1", port: int = 0
) -> tuple[str, Callable[[], Awaitable[None]]]:
    """Start the simulator as a task in the running loop.

    Returns:
        The base URL (``http://127.0.0.1:PORT``) and an async function that stops the server.

    Raises:
        RuntimeError: The server could not start (e.g. the port is taken).
    """
    server = build_server(config, host, port, embedded=True)
    task = asyncio.ensure_future(server.serve())
    await _wait_started(server, task)
    bound = server.servers[0].sockets[0].getsockname()
    url = f"http://{host}:{bound[1]}"

    async def stop() -> None:
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return url, stop


async def _wait_started(server: uvicorn.Server, task: asyncio.Future[None]) -> None:
    while not server.started:
        if task.done():
            # uvicorn exits via SystemExit when it cannot bind; surface a clear error instead.
            exc = task.exception() if not task.cancelled() else None
            raise RuntimeError(f"simulator server failed to start: {exc!r}")
        await asyncio.sleep(0.01)
