"""Light spans export what the SDK's spans export, call for call."""

from __future__ import annotations

import asyncio
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

from gateway.telemetry.spans import SpanBatch, light_tracer, span_ids

Script = Callable[[trace.Tracer], None]


def export(script: Script, *, light: bool, batched: bool = False, **provider_args: Any) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(**provider_args)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    batch = SpanBatch(60) if batched else None
    tracer = light_tracer(provider, "t", "1.0", batch=batch) if light else provider.get_tracer("t", "1.0")
    script(tracer)
    if batch is not None:
        batch.flush()
    return list(exporter.get_finished_spans())


def shape(span: ReadableSpan) -> dict[str, Any]:
    """Everything an exporter reads, minus the ids and times that differ by nature."""
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": dict(span.attributes or {}),
        "events": [(e.name, event_attributes(e.attributes)) for e in span.events],
        "dropped_events": span.dropped_events,
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
    """The SDK's spans, and the light ones, handed over as they end and in a batch: all the same."""
    sdk = [shape(s) for s in export(script, light=False, **provider_args)]
    light = [shape(s) for s in export(script, light=True, **provider_args)]
    assert light == sdk
    assert [shape(s) for s in export(script, light=True, batched=True, **provider_args)] == sdk
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
    assert (len(span["events"]), span["dropped_events"]) == (1, 1)
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

    for batched in (False, True):
        child, parent = export(script, light=True, batched=batched)
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


class Ended(SpanProcessor):
    def __init__(self, fail_on: str = "") -> None:
        self.ended: list[ReadableSpan] = []
        self.fail_on = fail_on

    def on_end(self, span: ReadableSpan) -> None:
        if span.name == self.fail_on:
            raise RuntimeError("processor failed")
        self.ended.append(span)


def batched_tracer(delay: float, processor: SpanProcessor) -> tuple[trace.Tracer, SpanBatch]:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    batch = SpanBatch(delay)
    return light_tracer(provider, "t", batch=batch), batch


async def test_a_batch_hands_spans_over_after_its_delay_in_the_order_they_ended() -> None:
    ended = Ended()
    tracer, batch = batched_tracer(0.05, ended)
    first, second = tracer.start_span("first"), tracer.start_span("second")
    second.end(end_time=second.start_time + 5)  # type: ignore[attr-defined]
    first.end()
    assert not first.is_recording()
    assert ended.ended == []
    await asyncio.sleep(0.2)
    assert [s.name for s in ended.ended] == ["second", "first"]
    assert ended.ended[0].end_time == ended.ended[0].start_time + 5  # type: ignore[operator]
    third = tracer.start_span("third")
    third.end()
    batch.flush()  # at once, and its timer is cancelled
    assert [s.name for s in ended.ended] == ["second", "first", "third"]


def test_outside_an_event_loop_a_span_is_handed_over_as_it_ends() -> None:
    ended = Ended()
    tracer, _ = batched_tracer(60, ended)
    tracer.start_span("s").end()
    assert [s.name for s in ended.ended] == ["s"]


async def test_a_failing_processor_loses_no_other_span() -> None:
    ended = Ended(fail_on="bad")
    tracer, batch = batched_tracer(60, ended)
    for name in ("a", "bad", "b"):
        tracer.start_span(name).end()
    batch.flush()
    assert [s.name for s in ended.ended] == ["a", "b"]


def test_span_ids_read_light_and_other_spans_alike() -> None:
    state = TraceState([("vendor", "v1")])
    remote = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1), trace_state=state))
    light = light_tracer(TracerProvider(), "t").start_span("child", trace.set_span_in_context(remote))
    for span in (remote, light, TracerProvider().get_tracer("t").start_span("sdk")):
        ctx = span.get_span_context()
        assert span_ids(span) == (ctx.trace_id, ctx.span_id, ctx.trace_flags, ctx.trace_state)
    assert span_ids(light) is not None
    assert span_ids(light)[2:] == (1, state)  # type: ignore[index]
    assert span_ids(trace.INVALID_SPAN) is None
