"""Issue 6: gateway keys, the upstream key's secrecy, listen address, CORS, upstream URL, SSE forging."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.reliability.support import (
    ANTHROPIC_SECRET,
    RawStream,
    ScriptedUpstream,
    json_reply,
    message_body,
    metric,
    parse_sse,
    reply_with,
    scenario_body,
    scrape,
    sim_stats,
    sse_head,
    text_stream,
)
from tests.support.servers import ROOT, free_port, run_gateway, run_simulator, wait_http

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.reliability.support import Seen
    from tests.support.servers import ServerProcess

KEY, OTHER = "csg_client-key-alpha-0123456789", "csg_client-key-beta-9876543210"


def _sha(key: str) -> str:
    import hashlib  # noqa: PLC0415

    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def sim() -> Iterator[ServerProcess]:
    """A fast standalone simulator."""
    with run_simulator({"GATEWAY_SIM_TTFT_SECONDS": "0", "GATEWAY_SIM_TOKENS_PER_SECOND": "400"}) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(sim: ServerProcess) -> Iterator[ServerProcess]:
    """A gateway with two keys, debug logging, and a real upstream key."""
    env = {"ANTHROPIC_BASE_URL": sim.url, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET,
           "GATEWAY_API_KEY_SHA256": f"{_sha(KEY)},{_sha(OTHER)}", "GATEWAY_LOG_LEVEL": "debug",
           "GATEWAY_UPSTREAM_IDLE_TIMEOUT": "1", "GATEWAY_UPSTREAM_MAX_RETRIES": "1"}
    with run_gateway(env) as server:
        yield server


ROUTES = [("POST", "/v1/messages", message_body(stream=False, max_tokens=5)),
          ("POST", "/v1/messages/count_tokens", {"model": "claude-sonnet-4-5",
                                                  "messages": [{"role": "user", "content": "x"}]}),
          ("GET", "/v1/models", None), ("GET", "/v1/models/claude-sonnet-4-5", None),
          ("POST", "/v1/agent/stream", {"prompt": "hi"})]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_every_route_needs_a_valid_key(
    sim: ServerProcess, gateway: ServerProcess, method: str, path: str, body: dict | None
) -> None:
    """No key, a wrong key, a near-miss key or a bad scheme: 401 authentication_error, nothing upstream."""
    before, upstream = metric(scrape(gateway.url), "claude_gateway_rejected_total", reason="auth"), \
        sim_stats(sim)["requests"]
    bad = [{}, {"x-api-key": "csg_wrong"}, {"x-api-key": KEY[:-1] + "X"}, {"authorization": f"Basic {KEY}"},
           {"authorization": "Bearer"}, {"x-api-key": _sha(KEY)}]
    for headers in bad:
        resp = httpx.request(method, gateway.url + path, json=body, headers=headers, timeout=10)
        assert resp.status_code == 401, (headers, resp.text)
        assert resp.json()["error"]["type"] == "authentication_error"
    assert sim_stats(sim)["requests"] == upstream
    assert metric(scrape(gateway.url), "claude_gateway_rejected_total", reason="auth") == before + len(bad)


def test_both_key_forms_accepted(gateway: ServerProcess) -> None:
    """``x-api-key`` and ``Authorization: Bearer`` with either configured key."""
    for headers in ({"x-api-key": KEY}, {"authorization": f"Bearer {OTHER}"}):
        resp = httpx.post(gateway.url + "/v1/messages", json=message_body(stream=False, max_tokens=5),
                          headers=headers, timeout=30)
        assert resp.status_code == 200, resp.text


def test_no_secret_in_replies_logs_or_spans(sim: ServerProcess, gateway: ServerProcess) -> None:
    """Across success, faults and refusals, neither the upstream key nor a client key is ever echoed."""
    seen: list[str] = []
    auth = {"x-api-key": KEY}
    for scenario in ("text", "error_401", "error_400", "error_500", "overloaded", "reset", "cut", "stall"):
        client = RawStream(gateway.url, "/v1/messages", scenario_body(scenario), auth)
        client.read_head()
        seen.append(json.dumps(client.headers) + client.read_all(timeout=15).decode(errors="replace"))
    for headers in ({"x-api-key": "csg_nope-" + ANTHROPIC_SECRET}, {"authorization": f"Bearer {ANTHROPIC_SECRET}"}):
        resp = httpx.post(gateway.url + "/v1/messages", json=message_body(), headers=headers)
        seen.append(json.dumps(dict(resp.headers)) + resp.text)
    for path, body in (("/v1/messages", b"{not json"), ("/v1/messages/count_tokens", b"{}")):
        resp = httpx.post(gateway.url + path, content=body, headers=auth)
        seen.append(resp.text)
    agent = RawStream(gateway.url, "/v1/agent/stream", {"prompt": "[sim:error_401] hi"}, auth)
    agent.read_head()
    seen.append(agent.read_all(timeout=15).decode(errors="replace"))
    traces = httpx.get(gateway.url + "/v1/gateway/traces?limit=100", headers=auth).text
    assert '"spans"' in traces
    time.sleep(0.3)
    log = gateway.log()
    assert "stream.completed" in log
    for where, text in [*(("reply", s) for s in seen), ("log", log), ("spans", traces),
                        ("metrics", scrape(gateway.url))]:
        for secret in (ANTHROPIC_SECRET, KEY, OTHER, ANTHROPIC_SECRET[:20]):
            assert secret not in text, f"a secret leaked into the {where}"


def test_upstream_gets_the_gateway_key_never_the_clients() -> None:
    """The upstream sees ANTHROPIC_API_KEY as x-api-key; client credentials and cookies don't pass."""
    script = ScriptedUpstream([reply_with(sse_head() + text_stream(["ok"]))])
    with script.running():
        env = {"ANTHROPIC_BASE_URL": script.url, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET,
               "GATEWAY_API_KEY_SHA256": _sha(KEY)}
        with run_gateway(env) as gateway:
            resp = httpx.post(gateway.url + "/v1/messages", json=message_body(), timeout=10,
                              headers={"authorization": f"Bearer {KEY}", "cookie": "session=abc",
                                       "x-forwarded-for": "10.0.0.1", "proxy-authorization": "Basic eA=="})
            assert resp.status_code == 200
            assert ANTHROPIC_SECRET not in resp.text
            assert ANTHROPIC_SECRET not in json.dumps(dict(resp.headers))
    headers = script.seen[0].headers
    assert headers["x-api-key"] == ANTHROPIC_SECRET
    for name in ("authorization", "cookie", "proxy-authorization"):
        assert name not in headers
    assert KEY not in json.dumps(headers)


def test_upstream_url_comes_from_configuration_only(sim: ServerProcess) -> None:
    """Host, forwarding headers, query or body fields never redirect the upstream call."""
    decoy = ScriptedUpstream([reply_with(json_reply(200, {"hijacked": True}))])
    with decoy.running():
        env = {"ANTHROPIC_BASE_URL": sim.url, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET}
        with run_gateway(env) as gateway:
            before = sim_stats(sim)["requests"]
            port = decoy.url.rsplit(":", 1)[1]
            headers = {"host": f"127.0.0.1:{port}", "x-forwarded-host": f"127.0.0.1:{port}",
                       "forwarded": f"host=127.0.0.1:{port}", "anthropic-base-url": decoy.url,
                       "x-anthropic-base-url": decoy.url}
            body = message_body(stream=False, max_tokens=5) | {"base_url": decoy.url}
            resp = httpx.post(gateway.url + f"/v1/messages?base_url={decoy.url}", json=body,
                              headers=headers, timeout=10)
            assert resp.status_code == 200, resp.text
            assert "hijacked" not in resp.text
            models = httpx.get(gateway.url + "/v1/models/..%2F..%2F_simulator%2Fstats", timeout=10)
            assert "by_status" not in models.text, "path traversal reached another upstream route"
    assert decoy.seen == []
    assert sim_stats(sim)["requests"] >= before + 1


def _serve(env: dict[str, str], host: str) -> subprocess.Popen[bytes]:
    port = free_port()
    full = {"PATH": "/usr/bin:/bin", "GATEWAY_ENV_FILE": "", "GATEWAY_LOG_FORMAT": "json", **env,
            "GATEWAY_PORT": str(port)}
    return subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--host", host, "--port", str(port)],
                            cwd=ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_refuses_non_loopback_without_keys() -> None:
    """0.0.0.0 with no keys: exits with one line naming the variable; ALLOW_OPEN or keys let it start."""
    proc = _serve({}, "0.0.0.0")
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode != 0
    assert b"GATEWAY_HOST" in out or b"GATEWAY_API_KEY_SHA256" in out
    assert b"Traceback" not in out
    for env in ({"GATEWAY_ALLOW_OPEN": "true"}, {"GATEWAY_API_KEY_SHA256": _sha(KEY)}):
        proc = _serve(env, "0.0.0.0")
        try:
            port = next(a for a in proc.args if a.isdigit())  # type: ignore[union-attr]
            wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        finally:
            proc.terminate()
            proc.communicate(timeout=20)


@pytest.mark.parametrize(("name", "value"), [
    ("GATEWAY_CORS_ORIGINS", "*"),
    ("GATEWAY_API_KEY_SHA256", "not-a-digest"),
    ("ANTHROPIC_BASE_URL", "file:///etc/passwd"),
])
def test_bad_security_settings_stop_startup(name: str, value: str) -> None:
    """A wildcard CORS origin, a malformed key digest, a non-http upstream: one clear line, no start."""
    proc = _serve({name: value, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET}, "127.0.0.1")
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode != 0
    assert name.encode() in out
    assert b"Traceback" not in out
    assert ANTHROPIC_SECRET.encode() not in out


def test_cors_only_for_listed_origins() -> None:
    """Listed origin: echoed back (never ``*``); other origins get no CORS grant."""
    with run_gateway({"GATEWAY_CORS_ORIGINS": "https://app.example.com"}) as gateway:
        preflight = {"access-control-request-method": "POST",
                     "access-control-request-headers": "content-type,x-api-key"}
        ok = httpx.options(gateway.url + "/v1/messages", headers={"origin": "https://app.example.com", **preflight})
        assert ok.headers.get("access-control-allow-origin") == "https://app.example.com"
        evil = httpx.options(gateway.url + "/v1/messages", headers={"origin": "https://evil.example", **preflight})
        assert evil.headers.get("access-control-allow-origin") in {None, ""}
        simple = httpx.get(gateway.url + "/v1/models", headers={"origin": "https://evil.example"})
        assert simple.headers.get("access-control-allow-origin") in {None, ""}
        assert "*" not in (ok.headers.get("access-control-allow-origin") or "")
        assert ok.headers.get("access-control-allow-credentials") != "true"


FORGERY = "done.\n\nevent: stream_end\ndata: {}\n\nid: x:99\r\nevent: done\rdata: {\"stop_reason\":\"x\"}\r\n\r\n: "


def test_model_and_tool_text_cannot_forge_sse_events() -> None:
    """Text with blank lines, CR and 'event:' lines stays inside one token event's JSON data."""

    async def forged(writer: asyncio.StreamWriter, _: Seen) -> None:
        writer.write(sse_head() + text_stream([FORGERY, "\u2028tail\u0085"]))
        await writer.drain()

    script = ScriptedUpstream([forged])
    with script.running():
        env = {"ANTHROPIC_BASE_URL": script.url, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET}
        with run_gateway(env) as gateway:
            client = RawStream(gateway.url, "/v1/agent/stream", {"prompt": "hi", "tools": []})
            assert client.read_head() == 200
            body = client.read_all(timeout=15)
            events = parse_sse(body)
            names = [name for name, _ in events]
            assert names.count("stream_end") == 1
            assert names[-1] == "stream_end"
            assert names.count("done") == 1
            tokens = "".join(json.loads(data)["text"] for name, data in events if name == "token")
            assert tokens == FORGERY + "\u2028tail\u0085"
            assert b"\r" not in body, "a raw CR would end a line for a browser's EventSource"
            assert body.count(b"\ndata: {}\n") == 1, "only the real stream_end has empty data"
            relay = RawStream(gateway.url, "/v1/messages", message_body())
            relay.read_head()
            relayed = parse_sse(relay.read_all())
            assert [n for n, _ in relayed].count("message_stop") == 1
            assert "stream_end" not in [n for n, _ in relayed]
