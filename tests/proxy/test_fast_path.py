"""The Messages fast path serves the requests that pass and hands every other one to Litestar.

The app runs its real lifespan (embedded simulator upstream); the fast path is called directly
with a recording fallback, so which side served a request is seen, not guessed. What Litestar
answers to the handed-over requests is covered by the security and validation suites, which go
through the fast path first.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.security.auth import hash_key
from gateway.settings import Settings

KEY = "sk-gw-test-key"
BODY = json.dumps({
    "model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}).encode()


class Call:
    """One ASGI call of the fast path: what it sent, and what the fallback received."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fallback_body: bytes | None = None

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


async def call(app: Any, body: bytes, *, headers: list[tuple[bytes, bytes]] | None = None,
               chunks: int = 1) -> Call:
    out = Call()
    size = -(-len(body) // chunks)
    parts = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
                for i, p in enumerate(parts)]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/messages", "raw_path": b"/v1/messages", "query_string": b"",
        "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "headers": [(b"content-type", b"application/json"), (b"x-api-key", KEY.encode()),
                    *(headers or [])],
    }

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        out.sent.append(message)

    async def fallback(scope: Any, receive: Any, send: Any) -> None:
        received = b""
        while True:
            message = await receive()
            received += message.get("body", b"")
            if not message.get("more_body"):
                break
        out.fallback_body = received

    await app.fast_path(scope, receive, send, fallback)
    return out


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def gateway(exporter: InMemorySpanExporter, **overrides: Any) -> Any:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings(**{"sim_ttft_seconds": 0.0, "sim_tokens_per_second": 2000.0,
                           "api_key_hashes": (hash_key(KEY),), **overrides})
    return create_app(settings, registry=CollectorRegistry(), tracer_provider=provider, environ={})


async def test_a_request_that_passes_is_served_with_its_spans(exporter: InMemorySpanExporter) -> None:
    app = gateway(exporter)
    async with AsyncTestClient(app):
        done = await call(app, BODY, chunks=3)
    assert done.fallback_body is None
    assert done.status == 200, done.sent
    assert done.body.rstrip().endswith(b'data: {"type":"message_stop"}')
    chat = next(s for s in exporter.get_finished_spans() if s.name.startswith("chat "))
    server = next(s for s in exporter.get_finished_spans() if s.name == "POST /v1/messages")
    assert chat.parent is not None
    assert server.context is not None
    assert chat.parent.span_id == server.context.span_id
    assert server.attributes is not None
    assert server.attributes.get("http.status_code") == 200


@pytest.mark.parametrize(
    ("why", "overrides", "body", "headers"),
    [
        ("an Origin (CORS is Litestar's)", {}, BODY, [(b"origin", b"http://app.example")]),
        ("a wrong key", {}, BODY, None),
        ("a body that is not JSON", {}, b"{not json", None),
        ("a body missing a field", {}, b'{"model":"m","messages":[]}', None),
        ("a body over the limit", {"max_body_bytes": 64}, BODY, None),
        ("a model the policy refuses", {"model_allowlist": ("claude-haiku-4-5",)}, BODY, None),
    ],
)
async def test_other_requests_go_to_litestar_with_their_body(
    exporter: InMemorySpanExporter, why: str, overrides: dict[str, Any], body: bytes,
    headers: list[tuple[bytes, bytes]] | None,
) -> None:
    app = gateway(exporter, **overrides)
    if why == "a wrong key":
        headers = None
        app = gateway(exporter, api_key_hashes=(hash_key("sk-gw-other-key"),))
    async with AsyncTestClient(app):
        done = await call(app, body, headers=headers, chunks=2)
    assert done.sent == [], why
    assert done.fallback_body == body, why


async def test_a_refusal_after_admission_is_rendered_by_the_apps_handler(
    exporter: InMemorySpanExporter,
) -> None:
    app = gateway(exporter, rate_limit_per_minute=1)
    async with AsyncTestClient(app):
        first = await call(app, BODY)
        second = await call(app, BODY)
        rejected = app.state.gateway.registry.get_sample_value(
            "claude_gateway_rejected_total", {"reason": "rate_limit"}
        )
    assert first.status == 200
    assert second.fallback_body is None
    assert second.status == 429
    assert json.loads(second.body)["error"]["type"] == "rate_limit_error"
    assert any(k == b"retry-after" for k, _ in second.sent[0]["headers"])
    assert rejected == 1
