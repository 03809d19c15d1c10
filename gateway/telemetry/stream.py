"""Per-stream telemetry: one record per upstream call, finished once, never per event.

A ``StreamRecord`` takes timestamps at four points (request received, upstream request sent,
first delta received, first delta written). ``finish`` takes the fifth (the end) and hands the
record to ``Telemetry``, which turns it and the observer's figures into the ``chat {model}``
span, the Prometheus samples and the ``stream.completed`` log line. Everything there is guarded:
an exception inside telemetry is counted in ``claude_gateway_telemetry_errors_total`` and
logged, and the stream is unaffected.

Records are turned into telemetry in batches, ``FLUSH_SECONDS`` after the first of a batch
ended, and at once before ``/metrics`` or the trace view is read and at shutdown. One stream's
telemetry code run alone runs with cold caches (other streams' relaying evicts it); run for a
batch of streams, it costs about a third less CPU per stream (``docs/performance.md``). The
span and the histograms use the stream's own timestamps, so only the log line's ``timestamp``
and the moment a sample becomes visible move, by at most ``FLUSH_SECONDS``.

Definitions (``PRODUCT.md``): TTFT runs from request received to first content delta written;
overhead is (upstream request sent - received) + (first delta written - first delta received).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.trace import SpanKind, Status, StatusCode, TraceFlags

from gateway.proxy.observer import StreamObserver
from gateway.telemetry.logs import get_logger, stream_line_writer
from gateway.telemetry.metrics import GatewayMetrics
from gateway.telemetry.models import normalize_model
from gateway.telemetry.pricing import PriceTable
from gateway.telemetry.spans import SpanBatch, span_ids
from gateway.telemetry.tool_latency import ToolCorrelation
from gateway.telemetry.tracing import trace_headers

# GatewayMetrics, PriceTable, SpanBatch and ToolCorrelation are imported at run time although only
# annotations name them: compiled (setup.py), the dataclasses below look their field types up
# when the module loads.
if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.trace import Span, Tracer


__all__ = ("FLUSH_SECONDS", "StreamRecord", "Telemetry")

#: How long a finished stream waits to be recorded with the others that end meanwhile.
#: Half a second holds about twenty streams at 40 a second: fewer, and the batch runs cold.
FLUSH_SECONDS = 0.5

log = get_logger("gateway.stream")

_SAMPLED: Final = int(TraceFlags.SAMPLED)

_OUTCOME_BY_ERROR = {
    "rate_limit_error": "rate_limited",
    "overloaded_error": "overloaded",
    "timeout_error": "timeout",
    "timeout": "timeout",
    "invalid_request_error": "bad_request",
    "request_too_large": "bad_request",
    "not_found_error": "bad_request",
    "authentication_error": "unauthorized",
    "permission_error": "unauthorized",
}


def _rounded(value: float, scale: float) -> float:
    """A non-negative ``value`` to the nearest 1/``scale``: ``round``'s figure, for a third of its cost."""
    return int(value * scale + 0.5) / scale


def outcome_for_error(error_type: str) -> str:
    """Map an Anthropic or gateway error type to a contract ``outcome``."""
    return _OUTCOME_BY_ERROR.get(error_type, "upstream_error")


@dataclass(slots=True)
class Telemetry:
    """App-wide telemetry handles, built by the lifespan. ``metrics`` is None when disabled."""

    metrics: GatewayMetrics | None
    tracer: Tracer | None
    prices: PriceTable
    correlation: ToolCorrelation
    capture_content: bool = False
    #: Where ended spans wait; flushed with the records, after them (their spans end there).
    spans: SpanBatch | None = None
    #: Writes the ``stream.completed`` line; the JSON chain's own writer once logging is configured.
    write_line: Callable[[str, dict[str, Any]], None] = field(
        default_factory=lambda: stream_line_writer("gateway.stream")
    )
    _pending: list[tuple[StreamRecord, str, str | None, float]] = field(
        default_factory=list, init=False, repr=False
    )
    _timer: asyncio.TimerHandle | None = field(default=None, init=False, repr=False)

    def begin(
        self,
        route: str,
        model: str,
        *,
        stream: bool,
        max_tokens: int | None,
        received: float,
        stream_id: str | None = None,
        agent_turn: bool = False,
        messages: object = None,
    ) -> StreamRecord:
        """Start the record of one upstream call; ``received`` is a ``perf_counter`` time.

        An ``agent_turn`` record counts the call (tokens, cost, upstream TTFT, generate phase,
        span) but not the request: the agent stream records those once, for all its turns.
        ``messages`` (the request's) go on the span only when content capture is opted in.
        """
        label = normalize_model(model, self.prices.known_models) if self.metrics is not None else "other"
        record = StreamRecord(self, route, model, label, stream, received)
        record.agent_turn = agent_turn
        if self.tracer is not None:
            attrs: dict[str, Any] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": model,
                "gen_ai.request.stream": stream,
                "gateway.route": route,
            }
            if max_tokens is not None:
                attrs["gen_ai.request.max_tokens"] = max_tokens
            if stream_id:
                attrs["gateway.stream_id"] = stream_id
            if self.capture_content and messages is not None:
                attrs["gen_ai.input.messages"] = json.dumps(messages, separators=(",", ":"), default=str)
            record.span = self.tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attrs)
        return record

    def defer(self, record: StreamRecord, outcome: str, error_type: str | None, end: float) -> None:
        """Queue a finished record; the batch is recorded ``FLUSH_SECONDS`` after its first."""
        self._pending.append((record, outcome, error_type, end))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Record every queued stream, then hand the ended spans over (scrape, trace view, shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        for record, outcome, error_type, end in pending:
            record.record(outcome, error_type, end)
        if self.spans is not None:
            self.spans.flush()


class StreamRecord:
    """Timestamps and observations of one upstream call; see the module docstring."""

    __slots__ = (
        "_epoch_offset",
        "agent_turn",
        "disconnect_phase",
        "first_written",
        "label",
        "model",
        "observer",
        "received",
        "request_id",
        "route",
        "span",
        "status",
        "stream",
        "telemetry",
        "upstream_sent",
    )

    def __init__(
        self, telemetry: Telemetry, route: str, model: str, label: str, stream: bool, received: float
    ) -> None:
        self.telemetry = telemetry
        self.route = route
        self.model = model
        self.label = label
        self.stream = stream
        self.received = received
        self.upstream_sent: float | None = None
        self.first_written: float | None = None
        self.observer = StreamObserver(capture=telemetry.capture_content)
        self.span: Span | None = None
        self.request_id = ""
        self.status = 0
        self.disconnect_phase: str | None = None
        self.agent_turn = False
        self._epoch_offset = time.time_ns() - int(time.perf_counter() * 1e9)

    def trace_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers that carry the span upstream (``traceparent``…); none without a span."""
        return [] if self.span is None else trace_headers(self.span)

    @property
    def ttft(self) -> float | None:
        """Seconds from request received to first delta written, if any was."""
        return None if self.first_written is None else self.first_written - self.received

    def summary(self) -> dict[str, Any]:
        """Figures for the agent's ``usage`` and ``done`` events."""
        usage = self.observer.final_usage()
        return {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_read_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "cost_usd": _rounded(self._cost(), 1e6),
        }

    def _cost(self) -> float:
        return self.telemetry.prices.cost_usd(self.observer.model or self.model, self.observer.final_usage())

    async def finish(self, outcome: str, error_type: str | None = None) -> None:
        """End the record: remember its tools now, queue the rest (module docstring). Never raises.

        Tool calls are remembered at once: a client may answer one before the batch is recorded,
        and its ``client`` phase is measured from this moment.
        """
        tel = self.telemetry
        if tel.metrics is None:
            return
        end = time.perf_counter()
        try:
            for tool in self.observer.tools:
                if tool.stopped is not None:
                    await tel.correlation.remember(tool.tool_id, tool.name, time.time())
        except Exception as exc:  # noqa: BLE001 - telemetry must never fail a stream
            self._failed(tel.metrics, exc)
        tel.defer(self, outcome, error_type, end)

    def record(self, outcome: str, error_type: str | None, end: float) -> None:
        """Turn the record into its span, samples and log line (``Telemetry.flush``). Never raises."""
        metrics = self.telemetry.metrics
        if metrics is None:
            return
        try:
            self._record(metrics, outcome, error_type, end)
        except Exception as exc:  # noqa: BLE001 - telemetry must never fail a stream
            self._failed(metrics, exc)

    @staticmethod
    def _failed(metrics: GatewayMetrics, exc: Exception) -> None:
        metrics.telemetry_errors.labels("stream").inc()
        log.warning("telemetry.failed", error=type(exc).__name__)

    def _record(self, m: GatewayMetrics, outcome: str, error_type: str | None, now: float) -> None:
        obs = self.observer
        usage = obs.final_usage()
        cost = self._cost()
        label, route = self.label, self.route
        trace_id, span_id, sampled = self._trace_ids()
        exemplar = {"trace_id": trace_id} if sampled and m.exemplars else None
        if self.span is not None:
            self._end_span(self.span, outcome, error_type, usage, now)  # first: its figures are final
        ttft = self.ttft
        if obs.first_delta_at is not None and self.upstream_sent is not None:
            upstream_ttft = obs.first_delta_at - self.upstream_sent
            m.observe(m.upstream_ttft, label, amount=upstream_ttft, exemplar=exemplar)
        if ttft is not None and not self.agent_turn:
            m.observe(m.ttft, route, label, amount=ttft, exemplar=exemplar)
            if self.upstream_sent is not None and obs.first_delta_at is not None:
                overhead = (
                    (self.upstream_sent - self.received) + (self.first_written or now) - obs.first_delta_at
                )
                m.observe(m.overhead, route, amount=max(overhead, 0.0), exemplar=exemplar)
        first = self.first_written or obs.first_delta_at
        if usage.output_tokens > 1 and first is not None:
            m.observe(m.tpot, label, amount=(now - first) / (usage.output_tokens - 1))
        if not self.agent_turn:
            m.observe(m.duration, route, label, outcome, amount=now - self.received, exemplar=exemplar)
            m.add(m.requests, route, outcome)
        m.count_tokens(
            label,
            (
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
                ("cache_read", usage.cache_read_tokens),
                ("cache_write", usage.cache_write_tokens),
            ),
        )
        if cost:
            m.add(m.cost, label, amount=cost)
        if error_type:
            m.add(m.stream_errors, route, error_type)
        if self.disconnect_phase:
            m.add(m.client_disconnects, route, self.disconnect_phase)
        tools = []
        for tool in obs.tools:
            tools.append(tool.name)
            m.record_tool(
                tool.name, "generate", None if tool.stopped is None else tool.stopped - tool.started
            )
        if self.agent_turn:
            return
        self.telemetry.write_line(
            "stream.completed",
            {
                "route": route,
                "model": self.model,
                "outcome": outcome,
                "ttft_ms": None if ttft is None else _rounded(ttft * 1000, 100.0),
                "duration_ms": _rounded((now - self.received) * 1000, 100.0),
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_tokens": usage.cache_read_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
                "cost_usd": _rounded(cost, 1e6),
                "stop_reason": obs.stop_reason,
                "tool_calls": tools,
                "error_type": error_type,
                "disconnect_phase": self.disconnect_phase,
                "status": self.status,
                "events": obs.events,
                "trace_id": trace_id or None,
                "span_id": span_id or None,
                "request_id": self.request_id or None,
                "response_id": obs.message_id or None,
            },
        )

    def _trace_ids(self) -> tuple[str, str, bool]:
        """The span's trace and span ids in hex, and whether it is sampled; empty without a span."""
        ids = None if self.span is None else span_ids(self.span)  # ints: SpanContext's are properties
        if ids is None:
            return "", "", False
        return f"{ids[0]:032x}", f"{ids[1]:016x}", bool(ids[2] & _SAMPLED)

    def _ns(self, perf: float) -> int:
        return self._epoch_offset + int(perf * 1e9)

    def _end_span(self, span: Span, outcome: str, error_type: str | None, usage: Any, now: float) -> None:  # noqa: ANN401
        obs = self.observer
        attrs: dict[str, Any] = {
            "gen_ai.response.id": obs.message_id,
            "gen_ai.response.model": obs.model or self.model,
            "gen_ai.usage.input_tokens": usage.input_tokens
            + usage.cache_read_tokens
            + usage.cache_write_tokens,
            "gen_ai.usage.output_tokens": usage.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
            "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens,
            "gateway.outcome": outcome,
            "gateway.events": obs.events,
        }
        if obs.stop_reason:
            attrs["gen_ai.response.finish_reasons"] = (obs.stop_reason,)
        if obs.capture:
            output = [{"role": "assistant", "parts": [{"type": "text", "content": "".join(obs.output_text)}]}]
            attrs["gen_ai.output.messages"] = json.dumps(output, separators=(",", ":"))
        if self.status:
            attrs["http.response.status_code"] = self.status
        if self.request_id:
            attrs["gen_ai.response.request_id"] = self.request_id
        if obs.first_delta_at is not None and self.upstream_sent is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = obs.first_delta_at - self.upstream_sent
            span.add_event("gen_ai.first_token", timestamp=self._ns(obs.first_delta_at))
        for tool in obs.tools:
            span.add_event(
                "gen_ai.tool_use",
                {"gen_ai.tool.name": tool.name, "gen_ai.tool.call.id": tool.tool_id},
                timestamp=self._ns(tool.started),
            )
        span.set_attributes(attrs)
        if outcome not in {"ok", "client_disconnect"}:
            span.set_attribute("error.type", error_type or outcome)
            span.set_status(Status(StatusCode.ERROR, error_type or outcome))
        span.end(end_time=self._ns(now))
