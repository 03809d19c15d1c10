"""The ASGI server span: the span opentelemetry-instrumentation-asgi makes, for a third of the CPU.

``OpenTelemetryMiddleware`` decodes every request header again for each of the ~10 headers it
looks up, sets the request attributes twice, and records four OpenTelemetry metrics per request
(to a no-op meter here: the gateway's metrics are Prometheus). Measured on a stream, that was
a quarter of the gateway's instructions. This middleware makes the same span with the
instrumentation's own functions (``collect_request_attributes``, ``get_default_span_details``,
``set_status_code``), handing them the two headers they read; ``tests/telemetry/
test_server_span.py`` holds the two side by side.

What it keeps: the name (``METHOD /path``), SERVER kind (INTERNAL under an active span), the
request attributes in the semantic-convention mode chosen by ``OTEL_SEMCONV_STABILITY_OPT_IN``,
the parent from the global propagator's headers (``traceparent``…), the status from the
response, exceptions recorded, and the span current while the app runs. The span ends with the
response's last message. What it drops: per-message ``send``/``receive`` spans (which the
gateway excluded anyway), the instrumentation's metrics, request and response hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation._semconv import (
    _OpenTelemetrySemanticConventionStability,
    _OpenTelemetryStabilitySignalType,
)
from opentelemetry.instrumentation.asgi import (
    collect_request_attributes,
    get_default_span_details,
    set_status_code,
)
from opentelemetry.trace import INVALID_SPAN, SpanKind, Status, StatusCode

from gateway.telemetry.spans import light_tracer

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

    from gateway.telemetry.spans import SpanBatch

__all__ = ("ServerSpanMiddleware",)

_ATTRIBUTE_HEADERS = frozenset({b"host", b"user-agent"})
"""The request headers ``collect_request_attributes`` reads."""

_KNOWN_REQUESTS = 512
"""Request shapes whose attributes are remembered (then the memory starts again)."""


class ServerSpanMiddleware:
    """ASGI middleware making one SERVER span per HTTP request.

    Args:
        app: The ASGI app to wrap.
        tracer_provider: Where the spans go.
        batch: Where ended spans wait for the processors (at once without one).
    """

    def __init__(self, app: Any, *, tracer_provider: TracerProvider, batch: SpanBatch | None = None) -> None:  # noqa: ANN401 - ASGI
        self.app = app
        self._tracer = light_tracer(tracer_provider, __name__, batch=batch)
        _OpenTelemetrySemanticConventionStability._initialize()  # type: ignore[no-untyped-call]
        self._mode = _OpenTelemetrySemanticConventionStability._get_opentelemetry_stability_opt_in_mode(
            _OpenTelemetryStabilitySignalType.HTTP
        )
        self._fields = frozenset(f.encode() for f in propagate.get_global_textmap().fields)
        self._known: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}
        self._statuses: dict[int, _StatusProbe] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # noqa: ANN401 - ASGI
        """Run the app inside the request's span."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        read: list[tuple[bytes, bytes]] = []
        carrier: dict[str, str] = {}
        for item in scope["headers"]:
            if item[0] in _ATTRIBUTE_HEADERS:
                read.append(item)
            elif item[0] in self._fields:
                carrier[item[0].decode("latin-1")] = item[1].decode("latin-1")
        name, attributes = self._request_details(scope, read)
        # An empty current context (the app run by a server, not inside another app's span) holds
        # no span: two Python calls where looking the span up takes five.
        if not context.get_current() or trace.get_current_span() is INVALID_SPAN:
            kind = SpanKind.SERVER
            parent = propagate.extract(carrier) if carrier else context.Context()
        else:
            kind, parent = SpanKind.INTERNAL, None
        span = self._tracer.start_span(name, parent, kind, attributes)

        async def traced_send(message: Any) -> None:  # noqa: ANN401 - ASGI
            what = message["type"]
            if what == "http.response.start":
                self._status(message["status"]).replay(span)
            await send(message)
            if what == "http.response.body" and not message.get("more_body", False):
                span.end()

        # What trace.use_span does, without its generator-based context manager (a tenth of
        # the span's cost): the span current while the app runs, and an escaping exception
        # recorded on it.
        token = context.attach(trace.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, traced_send)
        except Exception as exc:
            if span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            context.detach(token)
            if span.is_recording():
                span.end()

    # The scope typed as the dict ASGI makes it: its lookups are C calls once compiled.
    def _request_details(
        self, scope: dict[str, Any], read: list[tuple[bytes, bytes]]
    ) -> tuple[str, dict[str, Any]]:
        # A keep-alive connection (nginx's to the gateway above all) repeats the same request
        # shape: name and attributes are remembered by everything the two functions read.
        # start_span copies the attributes, so one dict can serve every span.
        server, client = scope.get("server"), scope.get("client")
        key = (
            scope.get("method"),
            scope.get("scheme"),
            scope.get("http_version"),
            scope.get("root_path"),
            scope.get("path"),
            scope.get("query_string"),
            server and tuple(server),
            client and tuple(client),
            *read,
        )
        found = self._known.get(key)
        if found is None:
            attributes = collect_request_attributes({**scope, "headers": read}, self._mode)  # type: ignore[no-untyped-call]
            found = (get_default_span_details(scope)[0], attributes)
            if len(self._known) >= _KNOWN_REQUESTS:
                self._known.clear()
            self._known[key] = found
        return found

    def _status(self, status: int) -> _StatusProbe:
        found = self._statuses.get(status)
        if found is None:
            found = self._statuses[status] = _StatusProbe(status, self._mode)
        return found


class _StatusProbe:
    """What the instrumentation's ``set_status_code`` does to a span for one status, replayed.

    It sets an attribute or two and a span status, chosen by the status code and the
    semantic-convention mode only; running it once per status code keeps its choices.
    """

    def __init__(self, status: int, mode: Any) -> None:  # noqa: ANN401 - an instrumentation enum
        self.attributes: dict[str, Any] = {}
        self.span_status: Status | None = None
        set_status_code(self, status, None, mode)  # type: ignore[no-untyped-call]

    def is_recording(self) -> bool:
        """The probe records whatever it is told."""
        return True

    def set_attribute(self, key: str, value: Any) -> None:  # noqa: ANN401
        """Keep an attribute to replay."""
        self.attributes[key] = value

    def set_status(self, status: Status) -> None:
        """Keep the status to replay; UNSET is not kept, since a span ignores it."""
        if status.status_code is not StatusCode.UNSET:
            self.span_status = status

    def replay(self, span: Span) -> None:
        """Do to ``span`` what ``set_status_code`` did to the probe."""
        if span.is_recording():
            span.set_attributes(self.attributes)
            if self.span_status is not None:
                span.set_status(self.span_status)
