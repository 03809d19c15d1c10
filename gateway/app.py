"""The app factory and the lifespan that owns every resource of a gateway process.

``create_app(settings)`` builds nothing that lives: the lifespan opens the upstream client, the
embedded simulator (when no upstream is configured), the limiter and the shared-state clients,
and closes them in ``finally``. The metrics registry and tracer provider are created per app (or
passed in by tests), so two apps in one process never share a series or a span.

Graceful shutdown: uvicorn catches SIGTERM; the lifespan chains its own handler in front, which
turns ``/readyz`` false, refuses new streams with a retryable 503, and after
``GATEWAY_DRAIN_SECONDS`` ends the streams still running with a retryable error event. uvicorn's
own graceful timeout is set longer than the drain, so no stream is cut without a terminal event.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from contextlib import asynccontextmanager
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.static_files import create_static_files_router
from prometheus_client import CollectorRegistry

from gateway.agent.routes import agent_routes
from gateway.agent.runner import AgentRunner
from gateway.handlers import exception_handlers
from gateway.ops import ops_routes
from gateway.proxy.client import HttpClient
from gateway.proxy.fast_path import MessagesFastPath
from gateway.proxy.relay import RelayHub
from gateway.proxy.routes import proxy_routes
from gateway.proxy.server_write import head_sender
from gateway.proxy.upstream import Upstream
from gateway.security.auth import KeyAuthenticator
from gateway.security.limits import create_limiter
from gateway.state import RAW_SEND, GatewayState
from gateway.telemetry.logs import configure_logging, get_logger
from gateway.telemetry.metrics import ROUTE_MESSAGES, GatewayMetrics
from gateway.telemetry.pricing import PriceTable
from gateway.telemetry.server_span import ServerSpanMiddleware
from gateway.telemetry.spans import SpanBatch, light_tracer
from gateway.telemetry.stream import FLUSH_SECONDS, Telemetry
from gateway.telemetry.tool_latency import create_tool_correlation
from gateway.telemetry.tracing import RecentTraces, build_tracer_provider

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from opentelemetry.sdk.trace import TracerProvider

    from gateway.settings import Settings

__all__ = ("GatewayApp", "create_app", "create_app_from_env", "package_version")


class GatewayApp(Litestar):
    """Litestar, plus the server's unwrapped ``send`` in the scope, plus the Messages fast path.

    Between the server and a handler, ``send`` is wrapped by Litestar's exception middleware and
    the server-span middleware, and each wrapper inspects every message. That matters for
    the first message (status) and the last (end of the server span) only. The relays write
    those through the wrapped ``send`` and each body chunk through ``scope[RAW_SEND]``, so a
    5,000-event stream costs the wrappers two calls, not 5,000. Under them, a chunked response
    head is written straight to uvicorn's transport (``server_write.head_sender``). ``POST
    /v1/messages`` goes to the fast path first, which hands Litestar whatever it does not serve
    whole.
    """

    fast_path: MessagesFastPath | None = None
    """``POST /v1/messages`` for the requests that pass every check (``proxy/fast_path.py``)."""

    def with_fast_path(self, wrap: Any) -> GatewayApp:  # noqa: ANN401 - a middleware factory
        """Serve ``POST /v1/messages`` through the fast path, ``wrap`` (the server span) around it."""
        self.fast_path = MessagesFastPath(self, wrap)
        return self

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # noqa: ANN401 - ASGI
        """Keep the raw ``send``, then run the app (or its fast path)."""
        scope[RAW_SEND] = send
        try:
            send = head_sender(send)
            fast = self.fast_path
            if fast is not None and scope["type"] == "http" and scope["path"] == ROUTE_MESSAGES and (
                scope["method"] == "POST"
            ):
                await fast(scope, receive, send, super().__call__)
                return
            await super().__call__(scope, receive, send)
        finally:
            # uvicorn's send is bound to the cycle that holds the scope: left in, it would make
            # each request a reference cycle, freed by a pass of the garbage collector (23 young
            # collections a thousand streams, against 5) instead of at its end. A pop: a
            # KeyError here would hide whatever raised above.
            scope.pop(RAW_SEND, None)


log = get_logger("gateway")
FRONTEND_DIR = Path(__file__).resolve().parent.parent / "frontend"


def package_version() -> str:
    """The installed distribution's version."""
    try:
        return version("claude-stream-gateway")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
    environ: Mapping[str, str] | None = None,
) -> GatewayApp:
    """Build the gateway app.

    Args:
        settings: The validated settings.
        registry: Metrics registry; a fresh one when omitted.
        tracer_provider: Tracer provider; one built from the ``OTEL_*`` variables when omitted.
        environ: Where ``OTEL_*`` variables are read (default: the process environment).
    """
    ver = package_version()
    registry = registry if registry is not None else CollectorRegistry()
    recent = RecentTraces(settings.trace_view_size) if settings.trace_view_size else None
    provider = (
        tracer_provider
        if tracer_provider is not None
        else build_tracer_provider(os.environ if environ is None else environ, version=ver, recent=recent)
    )
    if tracer_provider is not None and recent is not None:
        tracer_provider.add_span_processor(recent)
    # Ended spans reach the processors with the stream telemetry's batch (Telemetry.flush).
    spans = SpanBatch(FLUSH_SECONDS)
    # The server span wraps Litestar's routes and the fast path alike.
    span = (
        partial(ServerSpanMiddleware, tracer_provider=provider, batch=spans) if settings.telemetry else None
    )
    middleware = [DefineMiddleware(span)] if span is not None else []

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        metrics = (
            GatewayMetrics(registry, version=ver, max_streams=settings.max_streams)
            if settings.telemetry
            else None
        )
        client = HttpClient(
            connect_timeout=settings.connect_timeout, idle_timeout=settings.upstream_idle_timeout
        )
        stop_simulator = None
        base_url, api_key = settings.upstream_url, settings.anthropic_api_key
        if settings.simulated:
            from gateway.simulator import SimulatorConfig, start_embedded  # noqa: PLC0415

            base_url, stop_simulator = await start_embedded(SimulatorConfig.from_settings(settings))
            api_key = "sk-ant-simulator"
        correlation = create_tool_correlation(
            settings,
            on_error=(lambda _: metrics.telemetry_errors.labels("tool_correlation").inc())
            if metrics
            else None,
        )
        limiter = create_limiter(
            settings,
            on_error=(lambda _: metrics.telemetry_errors.labels("limits").inc()) if metrics else None,
        )
        telemetry = Telemetry(
            metrics=metrics,
            tracer=light_tracer(provider, "gateway", ver, batch=spans) if settings.telemetry else None,
            spans=spans,
            prices=PriceTable.load(settings.prices_file or None),
            correlation=correlation,
            capture_content=settings.capture_content,
        )
        upstream = Upstream(client, base_url, api_key, settings, metrics)
        hub = RelayHub(settings, metrics)
        state = GatewayState(
            settings=settings,
            version=ver,
            registry=registry,
            upstream=upstream,
            telemetry=telemetry,
            hub=hub,
            auth=KeyAuthenticator(settings.api_key_hashes),
            limiter=limiter,
            recent=recent,
            agent=AgentRunner(settings, upstream, telemetry, hub, provider),
        )
        app.state.gateway = state
        restore = _chain_sigterm(state)
        log.info(
            "gateway.started",
            upstream="embedded simulator" if settings.simulated else base_url,
            version=ver,
            telemetry=settings.telemetry,
        )
        try:
            await state.agent.start()
            # Everything built so far (modules, the app, this state) lives as long as the
            # process: out of the collector's sight, a full collection no longer walks it.
            # With telemetry on that walk was 0.12 M instructions a stream (callgrind): spans
            # kept for the trace view reach the old generation and trigger full collections.
            gc.collect()
            gc.freeze()
            yield
        finally:
            gc.unfreeze()  # an app built again in this process (tests) starts from the same place
            restore()
            await state.agent.close()
            telemetry.flush()  # streams ended in the last moments, before the exporters shut down
            await client.close()
            await limiter.close()
            await correlation.close()
            if stop_simulator is not None:
                await stop_simulator()
            provider.shutdown()

    cors = (
        CORSConfig(
            allow_origins=list(settings.cors_origins),
            allow_credentials=False,
            allow_headers=[
                "x-api-key",
                "authorization",
                "content-type",
                "anthropic-version",
                "anthropic-beta",
                "last-event-id",
            ],
        )
        if settings.cors_origins
        else None
    )
    handlers: list[Any] = [*proxy_routes, *agent_routes, *ops_routes]
    if FRONTEND_DIR.is_dir():
        handlers.append(
            create_static_files_router(
                path="/", directories=[FRONTEND_DIR], html_mode=True, include_in_schema=False
            )
        )
    return GatewayApp(
        route_handlers=handlers,
        lifespan=[lifespan],
        middleware=middleware,
        exception_handlers=exception_handlers,
        cors_config=cors,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="Claude Stream Gateway", version=ver, path="/schema"),
        logging_config=None,
    ).with_fast_path(span)


def _chain_sigterm(state: GatewayState) -> Any:  # noqa: ANN401 - returns a restore callable
    """Drain on SIGTERM before handing the signal to uvicorn; return a function undoing it.

    uvicorn stops accepting connections the moment it sees SIGTERM, so the signal is held back
    while streams drain: the process keeps answering, ``/readyz`` says 503 and new streams get
    a retryable 503, until the running streams end or ``GATEWAY_DRAIN_SECONDS`` pass (then they
    get a retryable error event). A second SIGTERM goes to uvicorn at once.
    """
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)
    tasks: set[asyncio.Task[None]] = set()

    def hand_over() -> None:
        if callable(previous):
            previous(signal.SIGTERM, None)

    async def drain() -> None:
        hub = state.hub
        log.info("gateway.draining", streams=len(hub.live), seconds=state.settings.drain_seconds)
        deadline = loop.time() + state.settings.drain_seconds
        while hub.live and loop.time() < deadline:  # noqa: ASYNC110 - streams end on their own
            await asyncio.sleep(0.05)
        if hub.live:
            hub.abort_all("drain")
            grace = loop.time() + 5
            while hub.live and loop.time() < grace:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        hand_over()

    def start_drain() -> None:
        if state.hub.draining:
            hand_over()
            return
        state.hub.draining = True
        task = loop.create_task(drain())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def handler(signum: int, frame: Any) -> None:  # noqa: ANN401 - a frame
        loop.call_soon_threadsafe(start_drain)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an app served from a test thread)
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


def create_app_from_env() -> Litestar:
    """Uvicorn factory for worker processes: settings from the environment."""
    from gateway.settings import Settings  # noqa: PLC0415

    settings = Settings.from_env(env_file=os.environ.get("GATEWAY_ENV_FILE", ".env") or None)
    configure_logging(settings)
    return create_app(settings)
