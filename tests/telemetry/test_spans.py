"""Light spans export what the SDK's spans export, call for call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from gateway.telemetry.spans import light_tracer

Script = Callable[[trace.Tracer], None]


def export(script: Script, *, light: bool, **provider_args: Any) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(**provider_args)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = light_tracer(provider, "t", "1.0") if light else provider.get_tracer("t", "1.0")
    script(tracer)
    return list(exporter.get_finished_spans())


def shape(span: ReadableSpan) -> dict[str, Any]:
    """Everything an exporter reads, minus the ids and times that differ by nature."""
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": dict(span.attributes or {}),
        "events": [(e.name, event_attributes(e.attributes)) for e in span.events],
        "status": (span.status.status_code, span.status.description),
        "scope": span.instrumentation_scope,
        "resource": span.resource.attributes,
        "has_parent": span.parent is not None,
        "sampled": span.context.trace_flags.sampled if span.context else None,
    }


def event_attributes(attributes: Any) -> dict[str, Any]:
    """The stack trace's frames differ (the SDK's context manager is one more); its end does not."""
    out = dict(attributes or {})
    if "exception.stacktrace" in out:
        out["exception.stacktrace"] = out["exception.stacktrace"].splitlines()[-1]
    return out


def both(script: Script, **provider_args: Any) -> list[dict[str, Any]]:
    sdk = [shape(s) for s in export(script, light=False, **provider_args)]
    light = [shape(s) for s in export(script, light=True, **provider_args)]
    assert light == sdk
    return light


def stream_span(tracer: trace.Tracer) -> None:
    span = tracer.start_span("chat m", kind=SpanKind.CLIENT, attributes={"a": "x", "n": [1], "none": None})
    span.add_event("gen_ai.first_token", timestamp=5)
    span.add_event("gen_ai.tool_use", {"gen_ai.tool.name": "search"})
    span.set_attributes({"b": True, "reasons": ["end_turn"], "f": 0.5})
    span.set_attribute("c", "y")
    span.update_name("chat m2")
    span.set_status(Status(StatusCode.ERROR, "overloaded"))
    span.end(end_time=10**18)
    span.set_attribute("late", 1)  # ignored, with a warning, by both
    span.end()


def raising_child(tracer: trace.Tracer) -> None:
    with (
        tracer.start_as_current_span("server", kind=SpanKind.SERVER),
        pytest.raises(RuntimeError),
        tracer.start_as_current_span("inner"),
    ):
        raise RuntimeError("boom")


def status_rules(tracer: trace.Tracer) -> None:
    span = tracer.start_span("s")
    span.set_status(StatusCode.UNSET)
    span.set_status(StatusCode.OK)
    span.set_status(StatusCode.ERROR, "after ok: ignored")
    span.end()


def test_a_stream_span_exports_the_same() -> None:
    [span] = both(stream_span)
    assert span["attributes"]["reasons"] == ("end_turn",)
    assert span["attributes"]["n"] == (1,)
    assert "late" not in span["attributes"]
    assert span["name"] == "chat m2"


def test_exceptions_and_parents_export_the_same() -> None:
    inner, server = both(raising_child)
    assert inner["has_parent"]
    assert not server["has_parent"]
    assert inner["events"][0][0] == "exception"
    assert inner["status"] == (StatusCode.ERROR, "RuntimeError: boom")


def test_status_rules_are_the_sdks() -> None:
    [span] = both(status_rules)
    assert span["status"] == (StatusCode.OK, None)


def test_span_limits_are_the_sdks() -> None:
    limits = SpanLimits(max_span_attributes=3, max_attribute_length=1, max_events=1)
    [span] = both(stream_span, span_limits=limits)
    assert len(span["attributes"]) == 3
    assert all(len(v) <= 1 for v in span["attributes"].values() if isinstance(v, str))
    assert len(span["events"]) == 1
    [light] = export(stream_span, light=True, span_limits=limits)
    assert light.dropped_attributes > 0


def test_the_sampler_is_the_providers() -> None:
    assert both(stream_span, sampler=ALWAYS_OFF) == []
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)))
    span = light_tracer(provider, "t").start_span("s")
    assert isinstance(span, NonRecordingSpan)
    assert span.get_span_context().is_valid  # still propagated as traceparent, unsampled
    assert not span.get_span_context().trace_flags.sampled


def test_the_default_sampler_decides_as_the_sdks() -> None:
    """parentbased_always_on is decided inline: no parent, and sampled or not, random or not, local or remote parents."""
    state = TraceState([("vendor", "v1")])
    parents = [None] + [
        trace.set_span_in_context(NonRecordingSpan(SpanContext(
            0xABC, 0xDEF, is_remote=remote, trace_flags=TraceFlags(flags), trace_state=state)))
        for remote in (True, False) for flags in (TraceFlags.DEFAULT, TraceFlags.SAMPLED, 0x03)
    ]
    provider = TracerProvider()
    for parent in parents:
        decided = []
        for tracer in (provider.get_tracer("t"), light_tracer(provider, "t")):
            span = tracer.start_span("s", parent, attributes={"a": 1})
            ctx = span.get_span_context()
            decided.append((span.is_recording(), ctx.trace_flags, ctx.trace_state,
                            parent is None or ctx.trace_id == 0xABC, getattr(span, "attributes", None)))
        assert decided[1] == decided[0]


def test_children_share_the_trace_and_point_at_their_parent() -> None:
    def script(tracer: trace.Tracer) -> None:
        with tracer.start_as_current_span("parent"):
            tracer.start_span("child").end()

    child, parent = export(script, light=True)
    assert child.parent == parent.context
    assert child.context is not None
    assert parent.context is not None
    assert child.context.trace_id == parent.context.trace_id


def test_a_provider_that_is_not_the_sdks_keeps_its_tracer() -> None:
    noop = trace.NoOpTracerProvider()
    assert type(light_tracer(noop, "t")) is type(noop.get_tracer("t"))


def test_every_processor_is_called_even_one_added_later() -> None:
    """``on_end`` reaches each processor, ``on_start`` those that have one, whenever added."""

    class Hooks(SpanProcessor):
        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            self.calls.append(("start", span.name))

        def on_end(self, span: ReadableSpan) -> None:
            self.calls.append(("end", span.name))

    class EndOnly(SpanProcessor):
        def __init__(self) -> None:
            self.ended: list[str] = []

        def on_end(self, span: ReadableSpan) -> None:
            self.ended.append(span.name)

    provider = TracerProvider()
    first = EndOnly()
    provider.add_span_processor(first)
    tracer = light_tracer(provider, "t")
    tracer.start_span("a").end()
    hooks = Hooks()
    provider.add_span_processor(hooks)
    tracer.start_span("b").end()
    assert first.ended == ["a", "b"]
    assert hooks.calls == [("start", "b"), ("end", "b")]


def test_the_providers_id_generator_is_used() -> None:
    class Fixed(IdGenerator):
        def generate_span_id(self) -> int:
            return 7

        def generate_trace_id(self) -> int:
            return 9

    span = light_tracer(TracerProvider(id_generator=Fixed()), "t").start_span("s")
    ctx = span.get_span_context()
    assert (ctx.trace_id, ctx.span_id) == (9, 7)


def test_a_span_without_events_exports_none() -> None:
    def script(tracer: trace.Tracer) -> None:
        tracer.start_span("quiet", attributes={"a": 1}).end()

    assert both(script)[0]["events"] == []
    (span,) = export(script, light=True)
    assert (span.events, span.dropped_events) == ((), 0)
