"""A tracer whose spans cost a sixth of the OpenTelemetry SDK's, and reach the same processors.

The SDK validates every attribute as it is set (``BoundedAttributes``: a type check per value
and per sequence item, under a lock), takes a lock per call, and copies the span when it ends.
For the gateway's two spans per stream (the ASGI server span and ``chat {model}``) that was
0.25 M instructions each, more than a whole stream's relay work. The gateway's attributes are
built by its own code, of the types OpenTelemetry allows, so this tracer keeps them in a plain
dict and bounds them once, when the span ends, only where the span limits ask for it.

What stays the SDK's: the provider's sampler (``OTEL_TRACES_SAMPLER`` works), id generator,
resource, span limits and span processors (``on_start``, ``on_end``: the batch exporter and the
local trace view get ``ReadableSpan`` objects as before), and the exception event's format
(the SDK's own ``record_exception``). What it leaves out: the SDK's experimental pieces (its own
span metrics, tracer configurators, the ``_on_ending`` hook) and thread safety: a span is used
by the one task that made it.
"""

from __future__ import annotations

import logging
import random
from time import time_ns
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import (
    Event,
    ReadableSpan,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    sampling,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from opentelemetry.context import Context
    from opentelemetry.util.types import Attributes, AttributeValue

__all__ = ("light_tracer",)

logger = logging.getLogger(__name__)

# W3C Trace Context level 2's random-trace-id flag, set by the SDKs that know it (1.3x on).
_RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)
_FLAGS = tuple(TraceFlags(bits) for bits in range(4))
_UNSET = Status(StatusCode.UNSET)


def light_tracer(provider: trace.TracerProvider, name: str, version: str | None = None) -> trace.Tracer:
    """A tracer for ``name`` making light spans; the provider's own tracer when it is not the SDK's.

    Args:
        provider: The tracer provider (its sampler, ids, resource, limits and processors serve).
        name: Instrumentation scope name.
        version: Instrumentation scope version.
    """
    sdk = provider.get_tracer(name, version)
    return _Tracer(sdk) if isinstance(sdk, sdk_trace.Tracer) else sdk


def _plain(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy with lists made tuples, as the SDK stores them."""
    if not attributes:
        return {}
    out = dict(attributes)
    for value in out.values():
        if isinstance(value, list):  # rare: a type check a value once compiled (setup.py)
            return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items()}
    return out


def _random_id(bits: int) -> int:
    """What the SDK's ``RandomIdGenerator`` draws: random bits, never 0 (the invalid id)."""
    value = random.getrandbits(bits)
    while not value:
        value = random.getrandbits(bits)
    return value


class _Tracer(trace.Tracer):
    def __init__(self, sdk: sdk_trace.Tracer) -> None:
        self._sampler = sdk.sampler
        self._ids = sdk.id_generator
        self._resource = sdk.resource
        self._processor = sdk.span_processor
        # The SDK keeps these two private; the tracer needs them to make the same spans.
        self._scope = sdk._instrumentation_scope
        self._limits = sdk._span_limits
        self._root_random = _RANDOM if _RANDOM and self._ids.is_trace_id_random() else 0
        # The SDK's default sampler (parentbased_always_on) records and samples a span unless its
        # parent is unsampled: decided here, without its three context lookups and its result
        # object (2 µs of a span's 7 to start). Any other sampler is asked.
        default = sampling.ParentBased(sampling.ALWAYS_ON)
        self._parent_decides = self._sampler.get_description() == default.get_description()  # type: ignore[no-untyped-call]
        # The default generator's ids, drawn here: its two methods are Python calls a span.
        self._random_ids = type(self._ids) is RandomIdGenerator
        # The provider's processors, called one by one rather than through its multi-processor's
        # loop, and on_start only where a processor defines one (the local trace view does
        # not): worked out again whenever a processor is added.
        self._seen: tuple[SpanProcessor, ...] | None = None
        self._starting: tuple[SpanProcessor, ...] = ()
        self._ending: tuple[SpanProcessor, ...] = ()

    def _hooks(self) -> tuple[tuple[SpanProcessor, ...], tuple[SpanProcessor, ...]]:
        """The processors to call ``on_start`` and ``on_end`` on, in the provider's order."""
        multi = self._processor
        if type(multi) is not SynchronousMultiSpanProcessor:  # another provider's: call it as it is
            return (multi,), (multi,)
        current: tuple[SpanProcessor, ...] = multi._span_processors
        if current is not self._seen:
            self._starting = tuple(p for p in current if type(p).on_start is not SpanProcessor.on_start)
            self._ending = tuple(p for p in current if type(p).on_end is not SpanProcessor.on_end)
            self._seen = current
        return self._starting, self._ending

    def _trace_id(self) -> int:
        return _random_id(128) if self._random_ids else self._ids.generate_trace_id()

    def _span_id(self) -> int:
        return _random_id(64) if self._random_ids else self._ids.generate_span_id()

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = (),
        start_time: int | None = None,
        # Kept for the signature: the gateway ends spans through use_span, which records
        # exceptions itself; a light span used as `with span:` only ends.
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        """Start a span, as ``opentelemetry.sdk.trace.Tracer.start_span`` does."""
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = self._trace_id()
        else:
            trace_id = parent.trace_id
        links = links or ()
        if self._parent_decides:
            sampled = recording = parent is None or parent.trace_flags.sampled
            state = None if parent is None else parent.trace_state
        else:
            result = self._sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled = result.decision.is_sampled()  # type: ignore[no-untyped-call]
            recording = result.decision.is_recording()  # type: ignore[no-untyped-call]
            state, attributes = result.trace_state, result.attributes
        ctx = SpanContext(
            trace_id,
            self._span_id(),
            is_remote=False,
            trace_flags=_FLAGS[
                (TraceFlags.SAMPLED if sampled else 0)
                | (self._root_random if parent is None else parent.trace_flags & _RANDOM)
            ],
            trace_state=state,
        )
        if not recording:
            return NonRecordingSpan(ctx)
        span = _Span(name, ctx, parent, kind, _plain(attributes), tuple(links), self)
        span._start_time = start_time if start_time is not None else time_ns()
        for processor in self._hooks()[0]:
            processor.on_start(span, parent_context=context)  # type: ignore[arg-type]
        return span

    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        """Start a span and make it current (a context manager)."""
        span = self.start_span(name, context, kind, attributes, links, start_time)
        return trace.use_span(  # type: ignore[return-value]
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        )

    def bounded(self, attributes: dict[str, Any], limit: int | None) -> Mapping[str, Any]:
        """``attributes``, bounded as the SDK would when the span limits are reached or set."""
        length = self._limits.max_attribute_length
        if length is None and (limit is None or len(attributes) <= limit):
            return attributes
        return BoundedAttributes(limit, attributes, immutable=True, max_value_len=length)


class _Span(trace.Span, ReadableSpan):
    """A recording span that is its own ``ReadableSpan`` once ended."""

    def __init__(
        self,
        name: str,
        ctx: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: tuple[trace.Link, ...],
        tracer: _Tracer,
    ) -> None:
        # ReadableSpan's fields, set as its __init__ sets them (one Python call less a span),
        # but the events: a BoundedList (a deque and a lock) only once there is one.
        self._name = name
        self._context = ctx
        self._kind = kind
        self._instrumentation_info = None
        self._instrumentation_scope = tracer._scope
        self._parent = parent
        self._start_time: int | None = None
        self._end_time: int | None = None
        self._attributes = attributes
        self._events: Sequence[Event] = ()
        self._links = links
        self._resource = tracer._resource
        self._status = _UNSET
        self._tracer = tracer

    def get_span_context(self) -> SpanContext:
        """The span's context."""
        return self._context  # type: ignore[return-value]

    def is_recording(self) -> bool:
        """True until the span ends."""
        return self._end_time is None

    def _open(self, what: str) -> bool:
        if self._end_time is None:
            return True
        logger.warning("Tried calling %s on an ended span.", what)
        return False

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute (lists are kept as tuples, as the SDK does)."""
        if self._open("set_attribute"):
            self._attributes[key] = tuple(value) if isinstance(value, list) else value  # type: ignore[index]

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Set several attributes."""
        if self._open("set_attributes"):
            self._attributes.update(_plain(attributes))  # type: ignore[union-attr]

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        """Add an event (time now unless given)."""
        if not self._open("add_event"):
            return
        tracer = self._tracer
        attrs = tracer.bounded(_plain(attributes), tracer._limits.max_event_attributes)
        events = self._events
        if not isinstance(events, BoundedList):
            events = self._events = BoundedList(tracer._limits.max_events)
        events.append(Event(name, attrs, time_ns() if timestamp is None else timestamp))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        """Links are taken at start only (the gateway adds none later)."""

    def update_name(self, name: str) -> None:
        """Rename the span."""
        if self._open("update_name"):
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Set the status; OK is final and UNSET is ignored, as in the SDK."""
        if not self._open("set_status") or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """Add the ``exception`` event, in the SDK's own format."""
        sdk_trace.Span.record_exception(self, exception, attributes, timestamp, escaped)  # type: ignore[arg-type]

    def end(self, end_time: int | None = None) -> None:
        """End the span and hand it to the span processors."""
        if self._end_time is not None:
            logger.warning("Calling end() on an ended span.")
            return
        self._end_time = end_time if end_time is not None else time_ns()
        tracer = self._tracer
        self._attributes = tracer.bounded(self._attributes, tracer._limits.max_span_attributes)  # type: ignore[arg-type]
        for processor in tracer._hooks()[1]:
            processor.on_end(self)
