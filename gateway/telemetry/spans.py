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

Given a ``SpanBatch``, an ended span reaches the processors later, with the other spans ended
meanwhile: the stream telemetry's batch (``gateway.telemetry.stream``) runs warm where one
stream's span end runs cold. The span's ``SpanContext`` (and its parent's) is built then too, or
when asked for: a stream needs only the ids (its ``traceparent``), read by ``span_ids``.
"""

from __future__ import annotations

import asyncio
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
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from opentelemetry.context import Context
    from opentelemetry.trace import TraceState
    from opentelemetry.util.types import Attributes, AttributeValue

__all__ = ("SpanBatch", "light_tracer", "span_ids")

logger = logging.getLogger(__name__)

# W3C Trace Context level 2's random-trace-id flag, set by the SDKs that know it (1.3x on).
_RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)
_FLAGS = tuple(TraceFlags(bits) for bits in range(4))
_UNSET = Status(StatusCode.UNSET)
_TRACE_ID_LIMIT = 2**128
_SPAN_ID_LIMIT = 2**64


def light_tracer(
    provider: trace.TracerProvider, name: str, version: str | None = None, *, batch: SpanBatch | None = None
) -> trace.Tracer:
    """A tracer for ``name`` making light spans; the provider's own tracer when it is not the SDK's.

    Args:
        provider: The tracer provider (its sampler, ids, resource, limits and processors serve).
        name: Instrumentation scope name.
        version: Instrumentation scope version.
        batch: Where ended spans wait for the processors; without one they reach them at once.
    """
    sdk = provider.get_tracer(name, version)
    return _Tracer(sdk, batch) if isinstance(sdk, sdk_trace.Tracer) else sdk


def span_ids(span: trace.Span | ReadableSpan) -> tuple[int, int, int, TraceState | None] | None:
    """Trace id, span id, trace flags and trace state of ``span``; None when its context is invalid.

    A light span's are read without building its ``SpanContext``, whose properties are Python
    calls (``SpanContext`` is a tuple: its fields are read by index for the same reason).
    """
    if type(span) is _Span:
        return span._trace_id, span._span_id, span._flags, span._state
    if span is INVALID_SPAN:  # no current span: its context is known invalid
        return None
    ctx = span.get_span_context()
    if ctx is None or not ctx[5]:  # is_valid
        return None
    return ctx[0], ctx[1], ctx[3], ctx[4]


class SpanBatch:
    """Ended light spans, handed to the processors ``delay`` seconds after the first of a batch.

    ``flush`` hands them over at once: before the local trace view is read and at shutdown.
    Outside an event loop a span is handed over as it ends.

    Args:
        delay: Seconds an ended span may wait.
    """

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._ended: list[_Span] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, span: _Span) -> None:
        """Queue an ended span."""
        self._ended.append(span)
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self._delay, self.flush)

    def flush(self) -> None:
        """Hand every queued span to the processors now, in the order they ended."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ended, self._ended = self._ended, []
        for span in ended:
            try:
                span._deliver()
            except Exception:  # one processor's failure must not lose the batch's other spans
                logger.exception("A span processor failed on a span's end.")


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
    def __init__(self, sdk: sdk_trace.Tracer, batch: SpanBatch | None) -> None:
        self._batch = batch
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
        # An empty context (the server span's without a traceparent) holds no parent to look up.
        empty = context is not None and not context
        current = INVALID_SPAN if empty else trace.get_current_span(context)
        ids = span_ids(current)
        parent: _Span | SpanContext | None
        if ids is None:
            parent, trace_id, parent_flags, state = None, self._trace_id(), 0, None
        else:  # a light parent is kept as it is: its SpanContext is built only if needed
            parent = current if type(current) is _Span else current.get_span_context()
            trace_id, _, parent_flags, state = ids
        links = links or ()
        if self._parent_decides:
            sampled = recording = parent is None or bool(parent_flags & TraceFlags.SAMPLED)
        else:
            result = self._sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled = result.decision.is_sampled()  # type: ignore[no-untyped-call]
            recording = result.decision.is_recording()  # type: ignore[no-untyped-call]
            state, attributes = result.trace_state, result.attributes
        flags = (TraceFlags.SAMPLED if sampled else 0) | (
            self._root_random if parent is None else parent_flags & _RANDOM
        )
        if not recording:
            return NonRecordingSpan(SpanContext(trace_id, self._span_id(), False, _FLAGS[flags], state))
        attrs = _plain(attributes)
        span = _Span(name, trace_id, self._span_id(), flags, state, parent, kind, attrs, links, self)
        span._start_time = time_ns() if start_time is None else start_time
        starting = self._hooks()[0]
        if starting:
            span._whole()  # a processor reading the span at its start finds its contexts
            for processor in starting:
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
    """A recording span that is its own ``ReadableSpan`` once ended.

    Its ``SpanContext`` and its parent's are built when first asked for, or when it is handed to
    the processors (``_deliver``); until then they are ids (module docstring).
    """

    # ReadableSpan's fields that start the same for every span, kept on the class until set:
    # an attribute set on a span is a dict insert, seven fewer a span.
    _instrumentation_info = None
    _context: SpanContext | None = None
    _parent: SpanContext | None = None
    _start_time: int | None = None
    _end_time: int | None = None
    _events: Sequence[Event] = ()
    _status: Status = _UNSET

    def __init__(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        flags: int,
        state: TraceState | None,
        parent: _Span | SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: Sequence[trace.Link],
        tracer: _Tracer,
    ) -> None:
        # ReadableSpan's fields, set as its __init__ sets them (one Python call less a span),
        # but the events (a BoundedList, a deque and a lock, only once there is one) and the
        # class's defaults.
        self._name = name
        self._trace_id = trace_id
        self._span_id = span_id
        self._flags = flags
        self._state = state
        self._kind = kind
        self._instrumentation_scope = tracer._scope
        self._up = parent
        self._attributes = attributes
        self._links = tuple(links)
        self._resource = tracer._resource
        self._tracer = tracer

    def get_span_context(self) -> SpanContext:
        """The span's context."""
        ctx = self._context
        if ctx is None:
            # SpanContext's fields, as its own __new__ (a Python call) sets them.
            trace_id, span_id = self._trace_id, self._span_id
            valid = 0 < trace_id < _TRACE_ID_LIMIT and 0 < span_id < _SPAN_ID_LIMIT
            state = DEFAULT_TRACE_STATE if self._state is None else self._state
            fields = (trace_id, span_id, False, _FLAGS[self._flags], state, valid)
            ctx = self._context = tuple.__new__(SpanContext, fields)
        return ctx

    def _whole(self) -> None:
        """Build the span's and its parent's ``SpanContext``, as ``ReadableSpan`` holds them."""
        self.get_span_context()
        up = self._up
        self._parent = up.get_span_context() if type(up) is _Span else up  # type: ignore[assignment]

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
        limits = tracer._limits
        # The event's fields set directly, as ReadableSpan's are: Event's two Python __init__s
        # and a BoundedList (a deque and a lock) cost 24 k instructions for a stream's one event.
        event = object.__new__(Event)
        event._name = name
        event._timestamp = time_ns() if timestamp is None else timestamp
        event._attributes = tracer.bounded(_plain(attributes), limits.max_event_attributes)
        events = self._events
        if isinstance(events, BoundedList):  # past the limit already: it drops the oldest
            events.append(event)
            return
        # A plain list (a span has one or two events) until the limit is passed; then the SDK's.
        events = self._events = [*events, event]
        if limits.max_events is not None and len(events) > limits.max_events:
            self._events = BoundedList.from_seq(limits.max_events, events)

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
        """End the span: to the span processors now, or with its tracer's batch."""
        if self._end_time is not None:
            logger.warning("Calling end() on an ended span.")
            return
        self._end_time = end_time if end_time is not None else time_ns()
        batch = self._tracer._batch
        if batch is None:
            self._deliver()
        else:
            batch.add(self)

    def _deliver(self) -> None:
        """Make the span whole (contexts, bounded attributes) and hand it to the processors."""
        tracer = self._tracer
        self._whole()
        self._attributes = tracer.bounded(self._attributes, tracer._limits.max_span_attributes)  # type: ignore[arg-type]
        for processor in tracer._hooks()[1]:
            processor.on_end(self)
