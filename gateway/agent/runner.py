"""Agent streams that outlive their connection: started, watched, resumed, cancelled.

A stream's loop runs in its own task, detached from the HTTP request that started it. Every
event is appended to the resume store *before* any client sees it, and clients only ever read
from the store (``read_from``), so the first client and a resuming one take the same path: no
gap and no duplicate by construction.

Lifetime: while no client is attached the loop keeps running for
``GATEWAY_RESUME_GRACE_SECONDS``, then is cancelled (the upstream call closes with it).
``cancel`` stops it at once, on this replica or, through the store's cancel flag, on another.
The stream always ends with ``stream_end``, after ``done`` or ``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.agent.demo_tools import build_demo_registry
from gateway.agent.events import encode_event, new_stream_id
from gateway.agent.loop import AgentLoop, TurnFailed, error_data
from gateway.agent.store import create_event_store, wait_for_cancel
from gateway.telemetry.logs import get_logger
from gateway.telemetry.metrics import ROUTE_AGENT
from gateway.telemetry.models import normalize_model
from gateway.telemetry.spans import light_tracer

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from gateway.agent.store import EventStore
    from gateway.agent.tools import ToolRegistry
    from gateway.proxy.relay import RelayHub
    from gateway.proxy.upstream import Upstream
    from gateway.settings import Settings
    from gateway.telemetry.stream import Telemetry

__all__ = ("AgentRun", "AgentRunner")

log = get_logger("gateway.agent")


@dataclass(eq=False)
class AgentRun:
    """One running agent stream on this replica."""

    stream_id: str
    owner: str
    model: str
    task: asyncio.Task[None] | None = None
    attached: int = 0
    grace: asyncio.TimerHandle | None = None
    end_reason: str | None = None
    seq: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def abort(self, reason: str) -> None:
        """Stop the loop; it writes its own terminal events."""
        self.end_reason = self.end_reason or reason
        if self.task is not None:
            self.task.cancel()


class AgentRunner:
    """Starts and tracks the agent streams of this process.

    Args:
        settings: Grace period, turns, store choice.
        upstream: Shared upstream client.
        telemetry: Shared telemetry handles.
        hub: The relay registry, so a drain reaches agent streams too.
        provider: Tracer provider (the ``agent`` span wraps the turns).
    """

    def __init__(
        self,
        settings: Settings,
        upstream: Upstream,
        telemetry: Telemetry,
        hub: RelayHub,
        provider: TracerProvider,
    ) -> None:
        self.settings = settings
        self.upstream = upstream
        self.telemetry = telemetry
        self.hub = hub
        self.default_model = "claude-sonnet-5-5"
        self.runs: dict[str, AgentRun] = {}
        self._tracer = (
            light_tracer(provider, "gateway.agent", batch=telemetry.spans) if settings.telemetry else None
        )
        self.store: EventStore | None = None
        self.tools: ToolRegistry | None = None

    async def start(self) -> None:
        """Open the store and the demo tools (called by the lifespan)."""
        self.store = create_event_store(self.settings)
        self.tools = build_demo_registry()

    async def close(self) -> None:
        """Cancel what runs and close the store."""
        for run in list(self.runs.values()):
            run.abort("shutdown")
        tasks = [r.task for r in self.runs.values() if r.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.store is not None:
            await self.store.close()
        if self.tools is not None:
            self.tools.close()

    async def launch(
        self,
        owner: str,
        request: dict[str, Any],
        headers: list[tuple[bytes, bytes]],
        *,
        max_turns: int,
        received: float,
        release: Any,  # noqa: ANN401 - the admission's async release
    ) -> AgentRun:
        """Create the stream in the store and start its loop; return it (not yet attached)."""
        assert self.store is not None and self.tools is not None
        run = AgentRun(new_stream_id(), owner, str(request["model"]))
        await self.store.create(run.stream_id, owner, {"model": run.model})
        self.runs[run.stream_id] = run
        self.hub.add(run, ROUTE_AGENT)
        run.task = asyncio.get_running_loop().create_task(
            self._run(run, request, headers, max_turns, received, release)
        )
        return run

    def attach(self, stream_id: str) -> None:
        """A client reads the stream: stop any grace timer."""
        run = self.runs.get(stream_id)
        if run is not None:
            run.attached += 1
            if run.grace is not None:
                run.grace.cancel()
                run.grace = None

    def detach(self, stream_id: str) -> None:
        """A client left: with nobody left, cancel the loop after the grace period."""
        run = self.runs.get(stream_id)
        if run is None:
            return
        run.attached -= 1
        if run.attached <= 0 and run.task is not None and not run.task.done():
            run.grace = asyncio.get_running_loop().call_later(
                self.settings.resume_grace_seconds, run.abort, "client_disconnect"
            )

    async def cancel(self, stream_id: str) -> bool:
        """Stop a stream now: here if it runs here, else through the store's flag."""
        run = self.runs.get(stream_id)
        if run is not None:
            run.abort("cancelled")
            return True
        assert self.store is not None
        return await self.store.request_cancel(stream_id)

    async def _emit(self, run: AgentRun, event: str, data: dict[str, Any]) -> None:
        assert self.store is not None
        await self.store.append(run.stream_id, run.seq, encode_event(run.stream_id, run.seq, event, data))
        run.seq += 1

    async def _run(
        self,
        run: AgentRun,
        request: dict[str, Any],
        headers: list[tuple[bytes, bytes]],
        max_turns: int,
        received: float,
        release: Any,  # noqa: ANN401
    ) -> None:
        assert self.store is not None and self.tools is not None
        span = (
            self._tracer.start_span(
                f"agent {run.model}",
                kind=SpanKind.INTERNAL,
                attributes={
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.provider.name": "anthropic",
                    "gen_ai.request.model": run.model,
                    "gateway.route": ROUTE_AGENT,
                    "gateway.stream_id": run.stream_id,
                },
            )
            if self._tracer is not None
            else None
        )
        trace_id = f"{span.get_span_context().trace_id:032x}" if span is not None else ""

        async def emit(event: str, data: dict[str, Any]) -> None:
            await self._emit(run, event, data)

        loop = AgentLoop(
            self.upstream,
            self.telemetry,
            self.tools,
            emit,
            request,
            headers,
            stream_id=run.stream_id,
            received=received,
        )
        outcome: str = "gateway_error"
        error_type: str | None = "internal"
        stop_reason: str | None = None
        watcher = asyncio.get_running_loop().create_task(self._watch_cancel(run))
        try:
            with trace.use_span(span, end_on_exit=False) if span is not None else contextlib.nullcontext():
                await emit("start", {"stream_id": run.stream_id, "model": run.model, "trace_id": trace_id})
                stop_reason = await loop.run(max_turns)
                outcome, error_type = "ok", None
        except TurnFailed as exc:
            outcome, error_type = exc.outcome, str(exc.data["type"])
            await self._safe_emit(run, "error", exc.data)
        except asyncio.CancelledError:
            reason = run.end_reason or "shutdown"
            if reason == "drain":
                outcome, error_type = "gateway_error", "drain"
                data = error_data("overloaded_error", "The gateway is restarting; retry the request.")
            elif reason == "cancelled":
                outcome, error_type = "client_disconnect", "cancelled"
                data = {**error_data("cancelled", "The stream was cancelled."), "retryable": False}
            else:
                outcome, error_type = "client_disconnect", reason
                data = {
                    **error_data("cancelled", "No client was attached; the stream was stopped."),
                    "retryable": False,
                }
            await self._safe_emit(run, "error", data)
        except Exception as exc:
            log.exception("agent.failed", stream_id=run.stream_id, error=type(exc).__name__, exc_info=exc)
            await self._safe_emit(run, "error", error_data("api_error", "Internal gateway error."))
        finally:
            watcher.cancel()
            now = time.perf_counter()
            ttft = None if loop.first_token_at is None else loop.first_token_at - received
            if outcome == "ok":
                await self._safe_emit(
                    run,
                    "done",
                    {
                        "stop_reason": stop_reason,
                        "ttft_ms": None if ttft is None else round(ttft * 1000, 2),
                        "duration_ms": round((now - received) * 1000, 2),
                        "usage": dict(loop.usage),
                    },
                )
            await self._safe_emit(run, "stream_end", {})
            await self.store.finish(run.stream_id)
            self.runs.pop(run.stream_id, None)
            self.hub.discard(run, ROUTE_AGENT)
            if run.grace is not None:
                run.grace.cancel()
            await release()
            self._record(run, loop, outcome, error_type, ttft, now - received, span)

    async def _watch_cancel(self, run: AgentRun) -> None:
        assert self.store is not None
        await wait_for_cancel(self.store, run.stream_id)
        run.abort("cancelled")

    async def _safe_emit(self, run: AgentRun, event: str, data: dict[str, Any]) -> None:
        try:
            await asyncio.shield(self._emit(run, event, data))
        except Exception as exc:  # noqa: BLE001 - a store failure must not hide the outcome
            log.warning("agent.emit_failed", stream_id=run.stream_id, error=type(exc).__name__)

    def _record(
        self,
        run: AgentRun,
        loop: AgentLoop,
        outcome: str,
        error_type: str | None,
        ttft: float | None,
        duration: float,
        span: Any,  # noqa: ANN401
    ) -> None:
        m = self.telemetry.metrics
        try:
            if span is not None:
                usage = loop.usage
                span.set_attributes(
                    {
                        "gateway.outcome": outcome,
                        "gen_ai.usage.input_tokens": int(
                            usage["input_tokens"] + usage["cache_read_tokens"] + usage["cache_write_tokens"]
                        ),
                        "gen_ai.usage.output_tokens": int(usage["output_tokens"]),
                        "gateway.cost_usd": float(usage["cost_usd"]),
                    }
                )
                if outcome not in {"ok", "client_disconnect"}:
                    span.set_status(Status(StatusCode.ERROR, error_type or outcome))
                    span.set_attribute("error.type", error_type or outcome)
                span.end()
            if m is None:
                return
            label = normalize_model(run.model, self.telemetry.prices.known_models)
            m.child(m.requests, ROUTE_AGENT, outcome).inc()
            m.observe(m.duration, ROUTE_AGENT, label, outcome, amount=duration)
            if ttft is not None:
                m.observe(m.ttft, ROUTE_AGENT, label, amount=ttft)
            if outcome == "client_disconnect":
                phase = "before_first_token" if ttft is None else "mid_stream"
                m.child(m.client_disconnects, ROUTE_AGENT, phase).inc()
            ctx = span.get_span_context() if span is not None else None
            self.telemetry.write_line(
                "stream.completed",
                {
                    "route": ROUTE_AGENT,
                    "model": run.model,
                    "outcome": outcome,
                    "stream_id": run.stream_id,
                    "ttft_ms": None if ttft is None else round(ttft * 1000, 2),
                    "duration_ms": round(duration * 1000, 2),
                    **loop.usage,
                    "stop_reason": loop.stop_reason,
                    "tool_calls": loop.tool_names,
                    "error_type": error_type,
                    "events": run.seq,
                    "trace_id": f"{ctx.trace_id:032x}" if ctx else None,
                    "span_id": f"{ctx.span_id:016x}" if ctx else None,
                },
            )
        except Exception:  # noqa: BLE001 - telemetry never fails a stream
            if m is not None:
                m.telemetry_errors.labels("agent").inc()
