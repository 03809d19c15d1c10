"""The server span matches opentelemetry-instrumentation-asgi's, request for request."""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.telemetry.server_span import ServerSpanMiddleware

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def scope(path: str = "/v1/messages", query: bytes = b"", **extra: bytes) -> dict[str, Any]:
    headers = [
        (b"host", b"gw.example:8443"),
        (b"user-agent", b"curl/8.5.0"),
        (b"x-api-key", b"sk-secret"),
        (b"content-type", b"application/json"),
    ]
    headers += [(k.replace("_", "-").encode(), v) for k, v in extra.items()]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "server": ("10.0.0.5", 8443),
        "client": ("10.0.0.9", 51234),
        "headers": headers,
    }


def app_answering(status: int, *, fail: bool = False) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        with scope["test.tracer"].start_as_current_span("inner"):
            pass
        if fail:
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def run(middleware: type, app: Any, request: dict[str, Any], *, fail: bool = False) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    kwargs: dict[str, Any] = (
        {"exclude_spans": ["receive", "send"]} if middleware is OpenTelemetryMiddleware else {}
    )
    wrapped = middleware(app, tracer_provider=provider, **kwargs)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_: Any) -> None:
        pass

    # The app's own "inner" span, from the same provider, must find the server span current.
    request = {**request, "test.tracer": provider.get_tracer("test")}
    with pytest.raises(RuntimeError) if fail else nullcontext():
        asyncio.run(wrapped(request, receive, send))
    return list(exporter.get_finished_spans())


def essentials(span: ReadableSpan) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": dict(span.attributes or {}),
        "status": (span.status.status_code, span.status.description),
        "parent": span.parent.span_id if span.parent else None,
        "trace_id": span.context.trace_id if span.parent else None,
        "events": [(e.name, dict(e.attributes or {})) for e in span.events],
    }


@pytest.mark.parametrize(
    ("request_", "status", "fail"),
    [
        (scope(), 200, False),
        (scope(traceparent=TRACEPARENT.encode()), 200, False),
        (scope("/v1/models", b"limit=5&after=x%20y"), 404, False),
        (scope(), 503, False),
        (scope(), 200, True),
    ],
    ids=["ok", "traceparent", "query-404", "503", "raises"],
)
def test_same_span_as_the_instrumentation(request_: dict[str, Any], status: int, fail: bool) -> None:
    ours = run(ServerSpanMiddleware, app_answering(status, fail=fail), request_, fail=fail)
    theirs = run(OpenTelemetryMiddleware, app_answering(status, fail=fail), request_, fail=fail)
    ours_server = [essentials(s) for s in ours if s.name != "inner"]
    theirs_server = [essentials(s) for s in theirs if s.name != "inner"]
    assert len(ours_server) == len(theirs_server) == 1
    for a, b in zip(ours_server, theirs_server, strict=True):
        # Exception events carry a stack trace whose frames differ; the event itself must be there.
        a["events"] = [name for name, _ in a["events"]]
        b["events"] = [name for name, _ in b["events"]]
        assert a == b
    assert ours_server[0]["kind"] is SpanKind.SERVER
    if status >= 500 or fail:
        assert ours_server[0]["status"][0] is StatusCode.ERROR
    if "traceparent" in str(request_["headers"]):
        assert ours_server[0]["trace_id"] == int(TRACEPARENT.split("-")[1], 16)
    # The span is current while the app runs: the app's own span is its child.
    (inner,) = [s for s in ours if s.name == "inner"]
    (server,) = [s for s in ours if s.name != "inner"]
    assert inner.parent is not None and server.context is not None
    assert inner.parent.span_id == server.context.span_id


def test_secret_headers_stay_off_the_span() -> None:
    (server,) = [s for s in run(ServerSpanMiddleware, app_answering(200), scope()) if s.name != "inner"]
    assert "sk-secret" not in str(dict(server.attributes or {}))


def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    asyncio.run(ServerSpanMiddleware(app, tracer_provider=provider)({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]
    assert exporter.get_finished_spans() == ()


def test_remembered_attributes_follow_the_request() -> None:
    """Request attributes are remembered per request shape; any difference gets its own."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    middleware = ServerSpanMiddleware(app_answering(200), tracer_provider=provider)
    tracer = provider.get_tracer("test")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_: Any) -> None:
        pass

    requests = [scope(), scope(), {**scope(), "client": ("10.0.0.7", 40000)}, scope("/v1/models"),
                {**scope(), "headers": [(b"host", b"other.example"), (b"user-agent", b"curl/8.5.0")]}]
    for request in requests:
        asyncio.run(middleware({**request, "test.tracer": tracer}, receive, send))
    spans = [dict(s.attributes or {}) for s in exporter.get_finished_spans() if s.name != "inner"]
    assert spans[0] == spans[1]
    assert (spans[2]["net.peer.ip"], spans[2]["net.peer.port"]) == ("10.0.0.7", 40000)
    assert spans[3]["http.target"] == "/v1/models"
    assert spans[4]["http.server_name"] == "other.example"
    assert spans[0]["http.server_name"] == "gw.example:8443"


@pytest.mark.parametrize("middleware", [OpenTelemetryMiddleware, ServerSpanMiddleware])
def test_the_app_runs_in_the_requests_context(middleware: type) -> None:
    """The client's baggage and trace reach the app (and so the upstream), as the instrumentation passes them."""
    seen: list[tuple[dict[str, object], int]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((dict(baggage.get_all()), trace.get_current_span().get_span_context().trace_id))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    run(middleware, app, scope(traceparent=TRACEPARENT.encode(), baggage=b"user=alice"))
    assert seen == [({"user": "alice"}, 0x0AF7651916CD43DD8448EB211C80319C)]
