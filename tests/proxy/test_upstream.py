"""What the upstream is told: the client's headers it may see, from the raw ASGI pairs."""

from __future__ import annotations

from gateway.proxy.upstream import forward_headers, response_headers

RAW = [
    (b"host", b"gw.example"),
    (b"x-api-key", b"sk-ant-client"),
    (b"authorization", b"Bearer sk-ant-client"),
    (b"content-type", b"application/json"),
    (b"anthropic-beta", b"tools-2024"),
    (b"x-request-id", b"r1"),
    (b"x-simulator-scenario", b"tools"),
    (b"cookie", b"session=1"),
]


def test_credentials_never_pass_and_a_version_is_always_sent() -> None:
    out = forward_headers(RAW, simulator=False)
    assert out == [
        (b"content-type", b"application/json"),
        (b"anthropic-beta", b"tools-2024"),
        (b"anthropic-version", b"2023-06-01"),
    ]
    assert (b"x-simulator-scenario", b"tools") in forward_headers(RAW, simulator=True)


def test_the_gateways_request_id_replaces_the_clients() -> None:
    out = forward_headers(RAW, simulator=False, request_id="gw-1")
    assert [v for k, v in out if k == b"x-request-id"] == [b"gw-1"]


def test_the_clients_version_is_kept() -> None:
    out = forward_headers([(b"anthropic-version", b"2024-01-01")], simulator=False)
    assert out == [(b"anthropic-version", b"2024-01-01")]


def test_response_headers_kept_in_order_with_each_responses_values() -> None:
    """The client gets the request id, retry hints and rate-limit headers, in order, with this reply's values."""
    raw = [
        (b"date", b"d"), (b"request-id", b"req_1"), (b"content-type", b"text/event-stream"),
        (b"anthropic-ratelimit-requests-remaining", b"9"), (b"x-envoy", b"e"), (b"retry-after", b"3"),
    ]
    kept = [(b"request-id", b"req_1"), (b"anthropic-ratelimit-requests-remaining", b"9"), (b"retry-after", b"3")]
    assert response_headers(raw) == kept
    again = [(name, value + b"!") for name, value in raw]  # same names: the remembered positions serve
    assert response_headers(again) == [(name, value + b"!") for name, value in kept]
    assert response_headers(raw[:3]) == kept[:1]  # other names: worked out again
    assert response_headers([]) == []
