"""OpenTelemetry: the tracer provider, its exporters, and the local trace view.

The provider is built by the app factory, never at import time, and handed to the ASGI
middleware and the stream telemetry explicitly (no ``trace.set_tracer_provider``), so tests get
an isolated provider each. Export is OTLP/HTTP, configured by the standard ``OTEL_*`` variables,
and only when one of them names an endpoint. Spans leave through a ``BatchSpanProcessor`` whose
queue drops on overflow: an unreachable or slow collector never blocks a stream.

``RecentTraces`` keeps the spans of the last N traces in memory for the frontend's waterfall,
so a developer without Jaeger still sees TTFT, tool phases and tokens. ``trace_headers`` gives
the headers that carry a span to the upstream.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.telemetry.spans import span_ids

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ("RecentTraces", "build_tracer_provider", "otlp_configured", "trace_headers")

_DEFAULT_PROPAGATORS = [TraceContextTextMapPropagator, W3CBaggagePropagator]


def otlp_configured(environ: Mapping[str, str]) -> bool:
    """True when the standard variables ask for OTLP trace export."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").lower() == "none":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def build_tracer_provider(
    environ: Mapping[str, str], *, version: str, recent: RecentTraces | None
) -> TracerProvider:
    """Build the provider; OTLP export only when ``environ`` configures it.

    Args:
        environ: The process environment, read once at start-up.
        version: Service version resource attribute.
        recent: The in-memory trace view to feed, if enabled.
    """
    resource = Resource.create(
        {
            "service.name": environ.get("OTEL_SERVICE_NAME", "claude-stream-gateway"),
            "service.version": version,
        }
    )
    provider = TracerProvider(resource=resource)
    if recent is not None:
        provider.add_span_processor(recent)
    if otlp_configured(environ):
        # Imported here: the exporter pulls in protobuf, which a laptop run without OTLP skips.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(timeout=5), max_queue_size=4096, schedule_delay_millis=1000)
        )
    return provider


class RecentTraces(SpanProcessor):
    """Span processor keeping the finished spans of the last ``size`` traces.

    Args:
        size: Traces kept; the oldest is dropped first.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._traces: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        """Keep ``span`` under its trace."""
        ids = span_ids(span)  # a light span's ids without SpanContext's properties (Python calls)
        if ids is None:
            return
        trace_id = ids[0]
        with self._lock:
            spans = self._traces.get(trace_id)
            if spans is None:
                spans = self._traces[trace_id] = []
                while len(self._traces) > self._size:
                    self._traces.popitem(last=False)
            spans.append(span)

    def snapshot(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` traces that hold a stream span, newest first, as JSON-ready dicts."""
        with self._lock:
            items = list(self._traces.items())
        out: list[dict[str, Any]] = []
        for trace_id, spans in reversed(items):
            stream = next((s for s in spans if s.name.startswith(("chat ", "agent "))), None)
            if stream is None:
                continue
            out.append(_trace_dict(trace_id, spans, stream))
            if len(out) >= limit:
                break
        return out


def _trace_dict(trace_id: int, spans: list[ReadableSpan], stream: ReadableSpan) -> dict[str, Any]:
    start = min(s.start_time or 0 for s in spans)
    end = max(s.end_time or 0 for s in spans)
    attrs = dict(stream.attributes or {})
    return {
        "trace_id": f"{trace_id:032x}",
        "stream_id": attrs.get("gateway.stream_id"),
        "route": attrs.get("gateway.route"),
        "model": attrs.get("gen_ai.request.model"),
        "outcome": attrs.get("gateway.outcome"),
        "start_unix_ms": start / 1e6,
        "duration_ms": (end - start) / 1e6,
        "spans": [
            {
                "span_id": f"{s.context.span_id:016x}" if s.context else "",
                "parent_id": f"{s.parent.span_id:016x}" if s.parent else None,
                "name": s.name,
                "kind": s.kind.name,
                "start_ms": ((s.start_time or start) - start) / 1e6,
                "duration_ms": ((s.end_time or end) - (s.start_time or start)) / 1e6,
                "status": s.status.status_code.name,
                "attributes": {
                    k: v if isinstance(v, str | int | float | bool) else list(v)  # type: ignore[arg-type]
                    for k, v in (s.attributes or {}).items()
                },
                "events": [{"name": e.name, "t_ms": (e.timestamp - start) / 1e6} for e in s.events],
            }
            for s in sorted(spans, key=lambda s: s.start_time or 0)
        ],
    }


def trace_headers(span: trace.Span) -> list[tuple[bytes, bytes]]:
    """The headers the global propagator would write to carry ``span`` to the next service.

    With OpenTelemetry's default propagators (W3C trace context and baggage) and no baggage in
    the current context, ``traceparent`` and ``tracestate`` are written here: ``inject`` makes a
    context, walks both propagators and looks the span up again, ten times the work. Any other
    propagator, or baggage to pass on, goes through ``inject``.
    """
    textmap = propagate.get_global_textmap()
    if _is_default(textmap) and not baggage.get_all():
        ids = span_ids(span)
        if ids is None:
            return []
        trace_id, span_id, flags, state = ids
        out = [(b"traceparent", b"00-%032x-%016x-%02x" % (trace_id, span_id, flags))]
        if state:
            out.append((b"tracestate", state.to_header().encode("latin-1")))
        return out
    carrier: dict[str, str] = {}
    textmap.inject(carrier, context=trace.set_span_in_context(span))
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items()]


@functools.lru_cache(maxsize=8)
def _is_default(textmap: object) -> bool:
    # The composite keeps its propagators private; read defensively, any doubt means `inject`.
    inner = getattr(textmap, "_propagators", None)
    return type(textmap) is CompositePropagator and [type(p) for p in inner or ()] == _DEFAULT_PROPAGATORS
