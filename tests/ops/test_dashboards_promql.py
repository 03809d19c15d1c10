"""Every dashboard query, and every recording rule, returns data from a real Prometheus.

A real gateway (embedded simulator) serves shaped traffic: text, thinking and tool streams,
client-run and server-run tools, upstream 429/529, an in-stream error, a client disconnect and
a rejected request. A real ``prometheus`` scrapes it every second, then each panel's PromQL is
evaluated through the HTTP API and must return at least one finite value.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from tests.support.servers import ROOT, free_port, run_gateway, stop_process, wait_http

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.support.servers import ServerProcess

pytestmark = pytest.mark.system

DASHBOARD_FILES = sorted((ROOT / "dashboards").glob("*.json"))
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
MODEL = "claude-sonnet-4-5"
FAST = {"x-simulator-fast": "1"}


def panel_queries() -> list[tuple[str, str]]:
    """(dashboard / panel / refId, expr) of every target of every committed dashboard."""
    out = []
    for path in DASHBOARD_FILES:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                out.append((f"{path.stem}/{panel['title']}/{target['refId']}", target["expr"]))
    return out


def substitute(expr: str) -> str:
    """Replace Grafana variables the way Grafana would for "All" over a 1-minute window."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
    return expr.replace("$model", ".*")


@contextlib.contextmanager
def run_prometheus(target_port: int) -> Iterator[str]:
    """A throwaway Prometheus scraping the gateway every second, with the repo's rules loaded."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed; `make test` installs it")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="prom-") as tmp:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{
                "job_name": "claude-gateway",
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
            }],
        }
        config_path = Path(tmp) / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        log_path = Path(tmp) / "prometheus.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [binary, f"--config.file={config_path}", f"--storage.tsdb.path={tmp}/data",
                 f"--web.listen-address=127.0.0.1:{port}", "--enable-feature=exemplar-storage"],
                stdout=log, stderr=subprocess.STDOUT,
            )
            url = f"http://127.0.0.1:{port}"
            try:
                try:
                    wait_http(url + "/-/ready", timeout=20, proc=proc)
                    _wait_first_scrape(url)
                except Exception:
                    raise RuntimeError(log_path.read_text()) from None
                yield url
            finally:
                stop_process(proc, timeout=10)


def _wait_first_scrape(url: str, timeout: float = 20) -> None:
    """Service discovery hands targets over after a few seconds: wait for the first scrape."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = httpx.get(url + "/api/v1/query", params={"query": "claude_gateway_build_info"},
                           timeout=5).json()["data"]["result"]
        if result:
            return
        time.sleep(0.2)
    raise TimeoutError("prometheus never scraped the gateway")


def _messages(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 256, "stream": True,
            "messages": [{"role": "user", "content": text}], **extra}


TOOL = {"name": "get_weather", "description": "Weather for a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}}


def _stream(client: httpx.Client, path: str, body: dict[str, Any],
            headers: dict[str, str], *, abort: bool = False) -> str:
    with client.stream("POST", path, json=body, headers=headers) as response:
        text = ""
        for chunk in response.iter_text():
            text += chunk
            if abort and "content_block_delta" in text:
                break
        return text


def _client_tool_round_trip(client: httpx.Client) -> None:
    """A tool_use turn (generate phase), then the client's tool_result (client phase)."""
    first = _messages("weather in Paris?", tools=[TOOL])
    text = _stream(client, "/v1/messages", first, {**FAST, "x-simulator-scenario": "tool_use"})
    match = re.search(r'"type":\s*"tool_use",\s*"id":\s*"([^"]+)"', text) or re.search(
        r'"id":\s*"(toolu_[^"]+)"', text)
    assert match, text[:2000]
    tool_id = match.group(1)
    follow = _messages("", tools=[TOOL])
    follow["messages"] = [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id,
                                           "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id,
                                      "content": "sunny"}]},
    ]
    _stream(client, "/v1/messages", follow, FAST)


def drive_traffic(gateway: ServerProcess) -> None:
    """One round of every kind of traffic the dashboards chart (run twice, for rates)."""
    jobs: list[Callable[[httpx.Client], object]] = [
        lambda c: _stream(c, "/v1/messages", _messages(), {**FAST, "x-simulator-scenario": "text"}),
        lambda c: _stream(c, "/v1/messages", _messages(),
                          {"x-simulator-scenario": "text", "x-simulator-ttft-ms": "120",
                           "x-simulator-tokens-per-second": "200",
                           "x-simulator-output-tokens": "20"}),
        lambda c: _stream(c, "/v1/messages", _messages(), {**FAST, "x-simulator-scenario": "thinking"}),
        _client_tool_round_trip,
        lambda c: _stream(c, "/v1/agent/stream", {"prompt": "what time is it?", "model": MODEL},
                          FAST),
        lambda c: _stream(c, "/v1/agent/stream", {"prompt": "compute 6*7", "model": MODEL,
                                                  "tools": ["calculator"]}, FAST),
        lambda c: _stream(c, "/v1/messages", _messages(),
                          {**FAST, "x-simulator-scenario": "error_429",
                           "x-simulator-retry-after": "0"}),
        lambda c: _stream(c, "/v1/messages", _messages(),
                          {**FAST, "x-simulator-scenario": "error_529",
                           "x-simulator-retry-after": "0"}),
        lambda c: _stream(c, "/v1/messages", _messages(),
                          {**FAST, "x-simulator-scenario": "overloaded"}),
        lambda c: _stream(c, "/v1/messages", _messages(),
                          {"x-simulator-scenario": "text", "x-simulator-ttft-ms": "20",
                           "x-simulator-tokens-per-second": "5",
                           "x-simulator-output-tokens": "100"}, abort=True),
        lambda c: c.post("/v1/messages", json={"model": MODEL, "messages": "not a list"}),
    ]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        clients = [httpx.Client(base_url=gateway.url, timeout=30) for _ in jobs]
        try:
            for future in [pool.submit(job, client) for job, client in zip(jobs, clients, strict=True)]:
                future.result()
        finally:
            for client in clients:
                client.close()


@pytest.fixture(scope="module")
def prometheus() -> Iterator[str]:
    """Prometheus with two rounds of traffic scraped (so every counter moved between scrapes)."""
    env = {"GATEWAY_UPSTREAM_RETRY_MAX_WAIT": "2", "GATEWAY_LOG_LEVEL": "warning"}
    with run_gateway(env) as gateway, run_prometheus(gateway.port) as prom:
        drive_traffic(gateway)
        time.sleep(2.5)
        drive_traffic(gateway)
        time.sleep(3)
        yield prom


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(prom + "/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def test_there_are_dashboards_with_queries() -> None:
    """The committed dashboards exist and hold queries (so the tests below mean something)."""
    assert DASHBOARD_FILES
    assert len(panel_queries()) >= 20


@pytest.mark.parametrize(("panel", "expr"), panel_queries(), ids=[p for p, _ in panel_queries()])
def test_panel_query_returns_data(prometheus: str, panel: str, expr: str) -> None:
    """The panel's PromQL returns at least one series with a finite value."""
    result = _query(prometheus, substitute(expr))
    assert result, f"{panel}: no data for {substitute(expr)}"
    assert _finite(result), f"{panel}: only NaN/Inf for {substitute(expr)}: {result}"
    if "rate(" in expr:  # the traffic moved every counter between two scrapes
        assert any(float(s["value"][1]) > 0 for s in result), f"{panel}: all zero: {result}"


def test_model_variable_has_values(prometheus: str) -> None:
    """The $model variable's label_values query lists the model used."""
    response = httpx.get(prometheus + "/api/v1/label/model/values",
                         params={"match[]": "claude_gateway_tokens_total"}, timeout=10)
    assert MODEL in response.json()["data"]


def _recording_rules() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [(r["record"], r["expr"]) for g in groups for r in g["rules"] if "record" in r]


@pytest.mark.parametrize(("record", "expr"), _recording_rules(), ids=[r for r, _ in _recording_rules()])
def test_recording_rule_selectors_match_real_series(prometheus: str, record: str, expr: str) -> None:
    """Each SLI expression (over a 1-minute window) finds the gateway's real series and labels."""
    short = re.sub(r"\[(5m|30m|1h|6h|3d)\]", "[1m]", expr)
    short = re.sub(r"claude_gateway:stream_slo_requests:rate\w+",
                   'sum by (route) (rate(claude_gateway_requests_total{route=~"/v1/messages|'
                   '/v1/agent/stream", outcome=~"ok|overloaded|upstream_error|timeout|'
                   'gateway_error"}[1m]))', short)
    result = _query(prometheus, short)
    assert _finite(result), f"{record}: {short} -> {result}"


def test_rules_evaluate_without_errors(prometheus: str) -> None:
    """Prometheus loaded every rule of alerts.yml and evaluates each without an error."""
    groups = httpx.get(prometheus + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == sum(len(g["rules"]) for g in yaml.safe_load(ALERTS.read_text())["groups"])
    assert [r["name"] for r in rules if r["health"] != "ok"] == []


def test_ttft_exemplars_carry_trace_ids(prometheus: str) -> None:
    """Latency histograms carry exemplars with a trace_id, which Grafana links to Tempo."""
    now = time.time()
    response = httpx.get(prometheus + "/api/v1/query_exemplars", timeout=10, params={
        "query": "claude_gateway_time_to_first_token_seconds_bucket",
        "start": now - 120, "end": now,
    })
    data = response.json()["data"]
    trace_ids = [e["labels"].get("trace_id", "") for series in data for e in series["exemplars"]]
    assert trace_ids, "no exemplars scraped"
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in trace_ids), trace_ids


def test_the_questions_the_observability_issue_asks(prometheus: str) -> None:
    """TTFT p95 by model, tokens per second by type, tool latency by tool and phase: all answered."""
    ttft = _query(prometheus, "histogram_quantile(0.95, sum by (le, model) "
                              "(rate(claude_gateway_time_to_first_token_seconds_bucket[1m])))")
    assert {s["metric"]["model"] for s in ttft if math.isfinite(float(s["value"][1]))} == {MODEL}
    tokens = _query(prometheus, "sum by (type) (rate(claude_gateway_tokens_total[1m]))")
    assert {s["metric"]["type"] for s in tokens if float(s["value"][1]) > 0} >= {"input", "output"}
    tools = _query(prometheus, "histogram_quantile(0.95, sum by (le, tool, phase) "
                               "(rate(claude_gateway_tool_duration_seconds_bucket[1m])))")
    pairs = {(s["metric"]["tool"], s["metric"]["phase"]) for s in tools if math.isfinite(float(s["value"][1]))}
    assert {("get_weather", "generate"), ("get_weather", "client"), ("calculator", "server")} <= pairs
