"""The repository's nginx.conf, run by the real nginx binary, in front of fakes and the gateway."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from typing import TYPE_CHECKING

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ops.nginx_support import (
    INDEX_HTML,
    NGINX_CONF,
    nginx_binary,
    render_config,
    run_dropping_upstream,
    run_echo_upstream,
    run_nginx,
)
from tests.support.servers import ROOT, run_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.support.servers import ServerProcess

pytestmark = pytest.mark.system

MODEL = "claude-sonnet-4-5"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _messages_body(text: str = "hello") -> dict[str, object]:
    return {
        "model": MODEL,
        "max_tokens": 512,
        "stream": True,
        "messages": [{"role": "user", "content": text}],
    }


def _agent_body(text: str = "hello") -> dict[str, object]:
    return {"model": MODEL, "max_tokens": 512, "messages": [{"role": "user", "content": text}]}


ROUTES = {
    "/v1/messages": (_messages_body, b"message_stop"),
    "/v1/agent/stream": (_agent_body, b"stream_end"),
}


# ---------------------------------------------------------------- config checks (no servers)


def test_nginx_t_accepts_the_config_as_is(tmp_path: Path) -> None:
    """`nginx -t` passes on the committed file, relative paths resolving under the prefix."""
    (tmp_path / "logs").mkdir()
    result = subprocess.run(
        [nginx_binary(), "-p", str(tmp_path), "-c", str(NGINX_CONF), "-t"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_deploy_variant_is_valid_and_keeps_the_stream_directives(tmp_path: Path) -> None:
    """deploy/nginx/nginx.conf passes `nginx -t` and has every directive of the /v1/ location."""
    deploy_conf = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    # The container resolves `gateway` through Docker/Kubernetes DNS; test with loopback, and
    # keep the container's /tmp files inside the test's folder.
    conf = deploy_conf.replace("gateway:8000", "127.0.0.1:8000").replace("/tmp/", f"{tmp_path}/")
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(conf)
    result = subprocess.run(
        [nginx_binary(), "-p", str(tmp_path), "-c", "nginx.conf", "-t"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr

    def v1_directives(text: str) -> set[str]:
        block = text.split("location /v1/ {", 1)[1].split("\n        }", 1)[0]
        lines = (line.split("#", 1)[0].strip() for line in block.splitlines())
        return {line for line in lines if line}

    missing = v1_directives(NGINX_CONF.read_text()) - v1_directives(deploy_conf)
    assert not missing, f"deploy/nginx/nginx.conf lacks {missing}"


def test_every_stream_critical_directive_is_present() -> None:
    """The directives the streaming behaviour depends on are in the /v1/ location."""
    text = NGINX_CONF.read_text()
    v1 = text.split("location /v1/ {", 1)[1]
    for directive in (
        "proxy_buffering off;", "proxy_cache off;", "gzip off;", "proxy_http_version 1.1;",
        'proxy_set_header Connection "";', "proxy_ignore_client_abort off;",
        "proxy_set_header X-Request-ID", "proxy_set_header traceparent",
        "limit_req ", "limit_conn ",
    ):
        assert directive in v1, directive
    assert "non_idempotent" not in text.replace("never listed as \"non_idempotent\"", "")
    assert "client_max_body_size 32m;" in text  # GATEWAY_MAX_BODY_BYTES default, 32 MiB
    assert re.search(r"(?m)^\s*keepalive \d+;", text), "upstream keepalive pool"
    # Each directive line that is not self-explanatory carries a comment on it or just above.
    for name in ("proxy_read_timeout", "proxy_buffering", "proxy_next_upstream ", "send_timeout"):
        idx = text.index(name)
        window = text[max(0, idx - 400) : text.index("\n", idx)]
        assert "#" in window, f"{name} has no comment saying why"


def test_render_config_keeps_documented_substitution_points() -> None:
    """The substitution points the tests rely on exist exactly as documented."""
    conf = render_config(18080, [18000, 18001], read_timeout="3s", send_timeout="3s")
    assert "listen 127.0.0.1:18080;" in conf
    assert "server 127.0.0.1:18000 max_fails=0;" in conf
    assert "server 127.0.0.1:18001 max_fails=0;" in conf
    assert "proxy_read_timeout 3s;" in conf
    assert re.search(r"(?m)^\s*send_timeout 3s;", conf)


# ---------------------------------------------------------------- against fake upstreams


@pytest.fixture(scope="module")
def echo_nginx() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """nginx in front of an upstream that echoes what it received."""
    with run_echo_upstream() as echo, run_nginx([echo.port]) as nginx:
        yield nginx.url, echo.requests  # type: ignore[misc]


def test_static_frontend_and_no_metrics(echo_nginx: tuple[str, list[dict[str, object]]]) -> None:
    """`/` serves frontend/ from disk; /metrics is a 404 from nginx, never proxied."""
    url, requests = echo_nginx
    before = len(requests)
    index = httpx.get(url + "/")
    assert index.status_code == 200
    assert index.text == INDEX_HTML
    assert index.headers["content-type"].startswith("text/html")
    assert httpx.get(url + "/metrics").status_code == 404
    assert httpx.get(url + "/metrics?x=1").status_code == 404
    assert len(requests) == before, "nothing reached the upstream"


def test_proxy_headers_request_id_and_traceparent(
    echo_nginx: tuple[str, list[dict[str, object]]],
) -> None:
    """HTTP/1.1 upstream, empty Connection, X-Request-ID generated or passed, traceparent passed."""
    url, _ = echo_nginx
    generated = httpx.post(url + "/v1/messages", json={}, headers={"Connection": "close"})
    seen = generated.json()
    assert seen["version"] == "HTTP/1.1"
    assert "connection" not in seen["headers"] or seen["headers"]["connection"] != "close"
    rid = seen["headers"]["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert generated.headers.get_list("x-request-id") == [rid], "one id, the one sent upstream"

    passed = httpx.post(
        url + "/v1/messages", json={},
        headers={"X-Request-ID": "client-id-123", "traceparent": TRACEPARENT, "tracestate": "a=b"},
    )
    headers = passed.json()["headers"]
    assert headers["x-request-id"] == "client-id-123"
    assert headers["traceparent"] == TRACEPARENT
    assert headers["tracestate"] == "a=b"
    assert passed.headers["x-request-id"] == "client-id-123"

    hostile = httpx.post(url + "/v1/messages", json={}, headers={"X-Request-ID": "bad id\"<x>"})
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.json()["headers"]["x-request-id"])


def test_body_limit_matches_gateway_and_answers_json(
    echo_nginx: tuple[str, list[dict[str, object]]],
) -> None:
    """A body over 32 MiB gets an Anthropic-shaped 413 from nginx before any byte is read."""
    url, _ = echo_nginx
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(32 * 1024 * 1024 + 1).encode() + b"\r\n\r\n"
        )
        reply = b""
        while b"}}" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413")
    assert b'"type":"request_too_large"' in reply
    ok = httpx.post(url + "/v1/messages", content=b"x" * (2 * 1024 * 1024))
    assert ok.status_code == 200, "2 MiB bodies pass"


def test_limit_req_answers_429_json(echo_nginx: tuple[str, list[dict[str, object]]]) -> None:
    """A burst far above the per-IP rate gets 429 with a JSON rate_limit_error."""
    url, _ = echo_nginx
    with httpx.Client() as client:
        statuses = [client.post(url + "/v1/models", json={}) for _ in range(120)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, "the burst was never limited"
    assert limited[0].json()["error"]["type"] == "rate_limit_error"
    assert limited[0].headers["retry-after"] == "1"
    time.sleep(2.5)  # let the bucket refill for the other tests on this nginx


@pytest.mark.parametrize(("method", "expected_hits"), [("POST", 1), ("GET", 2)])
def test_post_is_never_retried_on_another_upstream(method: str, expected_hits: int) -> None:
    """A failed POST is not replayed on the next gateway; an idempotent GET is."""
    with run_dropping_upstream() as first, run_dropping_upstream() as second:
        with run_nginx([first.port, second.port]) as nginx:
            response = httpx.request(method, nginx.url + "/v1/messages", json={"x": 1}, timeout=10)
            assert response.status_code == 502
            assert response.json()["error"]["type"] == "api_error"
            time.sleep(0.2)
        assert first.hits + second.hits == expected_hits


# ---------------------------------------------------------------- against the real gateway


@pytest.fixture(scope="module")
def gateway() -> Iterator[ServerProcess]:
    """The gateway with its embedded simulator, keepalive comments every second."""
    with run_gateway({"GATEWAY_KEEPALIVE_SECONDS": "1"}) as server:
        yield server


@pytest.fixture(scope="module")
def gateway_nginx(gateway: ServerProcess) -> Iterator[str]:
    """nginx with the idle timeouts shortened to 3 s, in front of the gateway."""
    with run_nginx([gateway.port], read_timeout="3s", send_timeout="3s") as nginx:
        yield nginx.url


def _timed_stream(
    base: str, route: str, headers: dict[str, str], *, stop_after_first: bool = False
) -> tuple[float, float, bytes]:
    """Stream one request; return (time to first content delta, total time, body)."""
    body_fn, _ = ROUTES[route]
    marker = b"content_block_delta" if route == "/v1/messages" else b"event: token"
    start = time.perf_counter()
    first = float("nan")
    data = b""
    with httpx.Client(timeout=60) as client, client.stream(
        "POST", base + route, json=body_fn(), headers=headers
    ) as response:
        assert response.status_code == 200, response.read()
        for chunk in response.iter_raw():
            data += chunk
            if first != first and marker in data:  # first is NaN until the marker shows up
                first = time.perf_counter() - start
                if stop_after_first:
                    break
    return first, time.perf_counter() - start, data


def test_stream_through_nginx_is_incremental(gateway: ServerProcess, gateway_nginx: str) -> None:
    """The first token through nginx arrives within a few ms of direct, long before the end."""
    headers = {
        "x-simulator-scenario": "text",
        "x-simulator-ttft-ms": "150",
        "x-simulator-tokens-per-second": "25",
        "x-simulator-output-tokens": "30",
    }
    direct, proxied = [], []
    for _ in range(3):
        direct.append(_timed_stream(gateway.url, "/v1/messages", headers))
        proxied.append(_timed_stream(gateway_nginx, "/v1/messages", headers))
    best_direct = min(first for first, _, _ in direct)
    best_proxied = min(first for first, _, _ in proxied)
    assert best_proxied - best_direct < 0.05, (best_direct, best_proxied)
    for first, total, body in proxied:
        assert b"message_stop" in body
        assert total - first > 0.8, f"first token at {first:.3f}s of {total:.3f}s: buffered"


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_quiet_stream_outlives_idle_timeouts(gateway_nginx: str, route: str) -> None:
    """A stream silent for 6 s passes nginx's 3 s idle timeouts thanks to keepalive comments."""
    headers = {"x-simulator-scenario": "text", "x-simulator-ttft-ms": "6000",
               "x-simulator-output-tokens": "5", "x-simulator-tokens-per-second": "50"}
    first, total, body = _timed_stream(gateway_nginx, route, headers)
    assert total > 6
    assert first > 5.5
    assert ROUTES[route][1] in body, body[-500:]
    assert body.count(b": keepalive") >= 3


def test_without_keepalives_nginx_would_cut_the_quiet_stream() -> None:
    """Control: the same quiet stream with keepalives every 30 s is cut by the 3 s timeout."""
    with run_gateway({"GATEWAY_KEEPALIVE_SECONDS": "30"}) as quiet, run_nginx(
        [quiet.port], read_timeout="3s", send_timeout="3s"
    ) as nginx:
        headers = {"x-simulator-scenario": "text", "x-simulator-ttft-ms": "6000",
                   "x-simulator-output-tokens": "5"}
        start = time.perf_counter()
        try:
            _, _, body = _timed_stream(nginx.url, "/v1/messages", headers)
        except (httpx.HTTPError, AssertionError):
            body = b""
        assert b"message_stop" not in body
        assert time.perf_counter() - start < 5.5
        assert "upstream timed out" in nginx.error_log()


def _metric(gateway: ServerProcess, name: str, **labels: str) -> float:
    text = httpx.get(gateway.url + "/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_client_abort_at_nginx_cancels_the_upstream_call(
    gateway: ServerProcess, gateway_nginx: str
) -> None:
    """Closing the client connection at nginx ends the gateway's stream and upstream call."""
    route = "/v1/messages"
    before = _metric(gateway, "claude_gateway_client_disconnects_total", route=route)
    headers = {"x-simulator-scenario": "text", "x-simulator-ttft-ms": "50",
               "x-simulator-tokens-per-second": "5", "x-simulator-output-tokens": "200"}
    first, _, _ = _timed_stream(gateway_nginx, route, headers, stop_after_first=True)
    assert first < 2
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if _metric(gateway, "claude_gateway_client_disconnects_total", route=route) > before:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the gateway never saw the client go away")
    assert _metric(gateway, "claude_gateway_active_streams", route=route) == 0
    assert _metric(gateway, "claude_gateway_requests_total", route=route,
                   outcome="client_disconnect") >= 1
    # The stream's own log line records the outcome, and that it ended at once: the full
    # stream would have run 40 s (200 tokens at 5/s).
    records = [json.loads(line) for line in gateway.log_lines() if line.startswith("{")]
    cut = [r for r in records if r.get("event") == "stream.completed"
           and r.get("outcome") == "client_disconnect" and r.get("route") == route]
    assert cut, gateway.log()[-2000:]
    assert cut[-1]["duration_ms"] < 5000
    assert cut[-1]["disconnect_phase"] == "mid_stream"


def test_traceparent_reaches_the_gateway_through_nginx(gateway_nginx: str) -> None:
    """The agent stream's trace is the caller's trace: traceparent crossed nginx intact."""
    with httpx.Client(timeout=30) as client, client.stream(
        "POST", gateway_nginx + "/v1/agent/stream", json=_agent_body(),
        headers={"traceparent": TRACEPARENT, "x-simulator-fast": "1",
                 "x-simulator-scenario": "text", "X-Request-ID": "e2e-request-1"},
    ) as response:
        assert response.headers["x-request-id"] == "e2e-request-1"
        body = response.read().decode()
    start = next(
        json.loads(line[len("data:"):])
        for block in body.split("\n\n") if "event: start" in block
        for line in block.splitlines() if line.startswith("data:")
    )
    assert start["trace_id"] == TRACEPARENT.split("-")[1]
