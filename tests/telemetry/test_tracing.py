"""``trace_headers``: what the global propagator's ``inject`` writes, without its work when it can."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.telemetry import tracing
from gateway.telemetry.spans import light_tracer
from gateway.telemetry.tracing import trace_headers


def injected(span: trace.Span) -> list[tuple[bytes, bytes]]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return sorted((k.encode(), v.encode()) for k, v in carrier.items())


def spans() -> Iterator[trace.Span]:
    yield light_tracer(TracerProvider(), "t").start_span("sampled")
    yield light_tracer(TracerProvider(sampler=ALWAYS_OFF), "t").start_span("unsampled")
    state = TraceState([("vendor", "v1"), ("other", "x")])
    remote = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1), trace_state=state))
    yield remote
    yield light_tracer(TracerProvider(), "t").start_span("child", trace.set_span_in_context(remote))
    yield NonRecordingSpan(SpanContext(0, 0, is_remote=False))  # invalid: nothing is written


@pytest.mark.parametrize(
    "span", list(spans()), ids=["sampled", "unsampled", "tracestate", "light-tracestate", "invalid"]
)
def test_the_default_propagators_headers_are_injects(span: trace.Span) -> None:
    assert tracing._is_default(propagate.get_global_textmap())
    assert sorted(trace_headers(span)) == injected(span)


def test_baggage_in_the_context_is_passed_on() -> None:
    span = light_tracer(TracerProvider(), "t").start_span("s")
    token = context.attach(baggage.set_baggage("user", "alice"))
    try:
        out = trace_headers(span)
        assert sorted(out) == injected(span)
    finally:
        context.detach(token)
    assert (b"baggage", b"user=alice") in out


class _Custom(TraceContextTextMapPropagator):
    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        carrier["x-custom-trace"] = "1"


def test_another_propagator_is_asked() -> None:
    span = light_tracer(TracerProvider(), "t").start_span("s")
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(_Custom())
    try:
        assert trace_headers(span) == [(b"x-custom-trace", b"1")]
    finally:
        propagate.set_global_textmap(before)
