"""Spans leave over OTLP/HTTP to a real receiver; a dead collector never slows or fails a stream."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.servers import free_port, run_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator

BODY = {"model": "claude-opus-5-5", "max_tokens": 128, "stream": True,
        "messages": [{"role": "user", "content": "secret prompt text"}]}


class Receiver(BaseHTTPRequestHandler):
    """A minimal OTLP/HTTP trace receiver keeping every span it is sent."""

    spans: ClassVar[list[dict[str, Any]]] = []
    headers_seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        payload = self.rfile.read(int(self.headers["content-length"]))
        Receiver.headers_seen.append(self.headers.get("content-type", ""))
        request = ExportTraceServiceRequest.FromString(payload)
        for resource in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attrs = {}
                    for a in span.attributes:
                        value = a.value
                        kind = value.WhichOneof("value")
                        attrs[a.key] = ([x.string_value for x in value.array_value.values]
                                        if kind == "array_value" else getattr(value, kind))
                    Receiver.spans.append({"name": span.name, "kind": span.kind, "attributes": attrs,
                                           "events": [e.name for e in span.events], "service": service,
                                           "trace_id": span.trace_id.hex()})
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return


def stream(url: str) -> bytes:
    with httpx.stream("POST", f"{url}/v1/messages", json=BODY, timeout=30) as resp:
        return resp.read()


def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_spans_reach_an_otlp_receiver() -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, the server and chat spans are exported, content-free."""
    Receiver.spans.clear()
    for endpoint in receiver():
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "gw-under-test",
               "GATEWAY_SIM_FAST": "true"}
        with run_gateway(env) as gw:
            assert b"message_stop" in stream(gw.url)
            deadline = time.monotonic() + 15
            while not any(s["name"].startswith("chat ") for s in Receiver.spans):
                assert time.monotonic() < deadline, "no chat span exported"
                time.sleep(0.1)
    chat = next(s for s in Receiver.spans if s["name"] == "chat claude-opus-5-5")
    assert chat["service"]["service.name"] == "gw-under-test"
    assert chat["attributes"]["gen_ai.provider.name"] == "anthropic"
    assert chat["attributes"]["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert chat["attributes"]["gen_ai.usage.output_tokens"] > 0
    assert "gen_ai.first_token" in chat["events"]
    assert any(s["trace_id"] == chat["trace_id"] and s["name"] != chat["name"] for s in Receiver.spans)
    assert "secret prompt text" not in json.dumps(Receiver.spans)
    assert Receiver.headers_seen[0] == "application/x-protobuf"


def test_no_export_without_otel_variables() -> None:
    """Nothing is exported (and nothing fails) when no OTLP endpoint is configured."""
    Receiver.spans.clear()
    for _ in receiver():
        with run_gateway({"GATEWAY_SIM_FAST": "true"}) as gw:
            assert b"message_stop" in stream(gw.url)
            time.sleep(1.5)
    assert Receiver.spans == []


def test_a_dead_collector_neither_slows_nor_fails_streams() -> None:
    """A collector that accepts connections but never answers: every stream still completes promptly."""
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(1)  # connections queue in the backlog and are never answered
    refused = f"http://127.0.0.1:{free_port()}"
    try:
        for endpoint in (f"http://127.0.0.1:{black_hole.getsockname()[1]}", refused):
            with run_gateway({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "GATEWAY_SIM_FAST": "true"}) as gw:
                for _ in range(5):
                    started = time.monotonic()
                    assert stream(gw.url).rstrip().endswith(b'data: {"type":"message_stop"}')
                    assert time.monotonic() - started < 2.0
                    time.sleep(0.3)
    finally:
        black_hole.close()
