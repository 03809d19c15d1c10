"""What the upstream is told: the client's headers it may see, from a mapping or raw ASGI pairs."""

from __future__ import annotations

import pytest

from gateway.proxy.upstream import forward_headers

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


@pytest.mark.parametrize("simulator", [False, True])
def test_raw_pairs_and_a_mapping_forward_the_same(simulator: bool) -> None:
    mapping = {k.decode().title(): v.decode() for k, v in RAW}
    assert forward_headers(RAW, simulator=simulator) == forward_headers(mapping, simulator=simulator)


def test_credentials_never_pass_and_a_version_is_always_sent() -> None:
    out = forward_headers(RAW, simulator=False)
    assert out == {
        "content-type": "application/json",
        "anthropic-beta": "tools-2024",
        "x-request-id": "r1",
        "anthropic-version": "2023-06-01",
    }
    assert "x-simulator-scenario" in forward_headers(RAW, simulator=True)
