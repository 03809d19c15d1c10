"""Generate the Grafana dashboards from reviewable Python; the JSON output is committed.

Run ``python dashboards/build.py`` after editing; ``tests/ops/test_dashboards.py`` fails when the
committed JSON differs from what this file generates. Plain dictionaries (Grafana's dashboard
JSON model, schemaVersion 39) keep this free of dependencies; every query uses the metric names
fixed in PRODUCT.md, and ``tests/ops/test_dashboards_promql.py`` runs each one against a real
Prometheus scraping a real gateway.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "claude-gateway-overview.json"

DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
MODEL = 'model=~"$model"'

Panel = dict[str, Any]


def target(expr: str, legend: str, ref: str = "A", *, exemplar: bool = False) -> dict[str, Any]:
    """One PromQL query of a panel."""
    return {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
        "range": True,
        "exemplar": exemplar,
    }


def quantiles(metric: str, by: str, selector: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99),
              *, exemplar: bool = True) -> list[dict[str, Any]]:
    """``histogram_quantile`` targets of ``metric`` for each of ``qs``, grouped by ``by``."""
    out = []
    for i, q in enumerate(qs):
        expr = (f"histogram_quantile({q}, sum by (le, {by}) "
                f"(rate({metric}_bucket{{{selector}}}[{RATE}])))")
        legend = f"p{round(q * 100)} " + " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(","))
        out.append(target(expr, legend, chr(ord("A") + i), exemplar=exemplar))
    return out


def timeseries(title: str, targets: list[dict[str, Any]], unit: str, *, description: str = "",
               stack: bool = False, w: int = 12, h: int = 8) -> Panel:
    """A time-series panel (grid position filled in by ``layout``)."""
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                              "showPoints": "never", "spanNulls": True}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom",
                               "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
    }


def stat(title: str, expr: str, unit: str, *, description: str = "",
         thresholds: list[tuple[float | None, str]] | None = None) -> Panel:
    """A single-number panel."""
    steps = [{"color": color, "value": value}
             for value, color in (thresholds or [(None, "green")])]
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [target(expr, title)],
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute",
                                                                  "steps": steps}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "area", "textMode": "auto"},
        "gridPos": {"h": 4, "w": 6, "x": 0, "y": 0},
    }


def row(title: str) -> Panel:
    """A row header."""
    return {"type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0}}


SLO_BAD = 'outcome=~"overloaded|upstream_error|timeout|gateway_error"'
SLO_COUNTED = 'outcome=~"ok|overloaded|upstream_error|timeout|gateway_error"'
STREAM_ROUTES = 'route=~"/v1/messages|/v1/agent/stream"'


def overview_panels() -> list[Panel]:
    """The overview dashboard, top to bottom."""
    return [
        row("Traffic and health"),
        stat("Requests / s", f"sum(rate(claude_gateway_requests_total[{RATE}]))", "reqps"),
        stat("Active streams", "sum(claude_gateway_active_streams)", "short",
             description="Streams open right now, all routes and replicas."),
        stat("Stream error ratio (SLO)",
             f"sum(rate(claude_gateway_requests_total{{{STREAM_ROUTES}, {SLO_BAD}}}[{RATE}])) / "
             f"sum(rate(claude_gateway_requests_total{{{STREAM_ROUTES}, {SLO_COUNTED}}}[{RATE}]))",
             "percentunit",
             description="Failed streams over counted streams; client disconnects, client "
                         "errors and rate limits are not counted. Objective: 99.5% success.",
             thresholds=[(None, "green"), (0.005, "orange"), (0.02, "red")]),
        stat("Gateway overhead p99",
             f"histogram_quantile(0.99, sum by (le) "
             f"(rate(claude_gateway_overhead_seconds_bucket[{RATE}])))", "s",
             thresholds=[(None, "green"), (0.005, "orange"), (0.05, "red")]),
        timeseries("Request rate by route and outcome", [target(
            f"sum by (route, outcome) (rate(claude_gateway_requests_total[{RATE}]))",
            "{{route}} {{outcome}}")], "reqps", stack=True),
        timeseries("Active streams by route and saturation", [
            target("sum by (route) (claude_gateway_active_streams)", "{{route}}"),
            target("sum by (instance) (claude_gateway_active_streams) / "
                   "max by (instance) (claude_gateway_max_streams)",
                   "saturation {{instance}}", "B"),
        ], "short", description="Saturation is active streams over GATEWAY_MAX_STREAMS per "
                                "instance (right-hand values are ratios)."),
        timeseries("Error ratio by outcome", [target(
            f"sum by (outcome) (rate(claude_gateway_requests_total{{outcome!=\"ok\"}}[{RATE}])) "
            f"/ ignoring (outcome) group_left "
            f"sum(rate(claude_gateway_requests_total[{RATE}]))",
            "{{outcome}}")], "percentunit", stack=True),
        timeseries("Client disconnects by route and phase", [target(
            f"sum by (route, phase) (rate(claude_gateway_client_disconnects_total[{RATE}]))",
            "{{route}} {{phase}}")], "reqps",
            description="Clients that went away; the gateway cancels their upstream call."),
        row("Latency"),
        timeseries("Time to first token by model",
                   quantiles("claude_gateway_time_to_first_token_seconds", "model", MODEL), "s",
                   description="Request received to first content delta written. Click an "
                               "exemplar dot to open the trace."),
        timeseries("Upstream time to first token by model",
                   quantiles("claude_gateway_upstream_time_to_first_token_seconds", "model",
                             MODEL, (0.5, 0.95)), "s",
                   description="Upstream request sent to first delta received: Anthropic's share."),
        timeseries("Gateway overhead p50/p99 by route",
                   quantiles("claude_gateway_overhead_seconds", "route", "", (0.5, 0.99)), "s",
                   description="Time the gateway itself adds on the first-token path."),
        timeseries("Time per output token by model",
                   quantiles("claude_gateway_time_per_output_token_seconds", "model", MODEL,
                             (0.5, 0.95)), "s"),
        timeseries("Stream duration p95 by route and outcome",
                   quantiles("claude_gateway_stream_duration_seconds", "route, outcome",
                             MODEL, (0.95,)), "s"),
        row("Tokens and cost"),
        timeseries("Tokens per second by type", [target(
            f"sum by (type) (rate(claude_gateway_tokens_total{{{MODEL}}}[{RATE}]))", "{{type}}")],
            "short", stack=True),
        timeseries("Cost per hour by model", [target(
            f"sum by (model) (rate(claude_gateway_cost_usd_total{{{MODEL}}}[{RATE}])) * 3600",
            "{{model}}")], "currencyUSD", stack=True,
            description="USD per hour at the current rate, from the gateway's price table."),
        row("Tools"),
        timeseries("Tool latency p50/p95 by tool and phase",
                   quantiles("claude_gateway_tool_duration_seconds", "tool, phase", "",
                             (0.5, 0.95)), "s",
                   description="generate: the model writing the call; client: the client "
                               "running it; server: the agent loop running it."),
        timeseries("Tool calls by tool and phase", [target(
            f"sum by (tool, phase) (rate(claude_gateway_tool_calls_total[{RATE}]))",
            "{{tool}} {{phase}}")], "reqps"),
        row("Upstream and errors"),
        timeseries("Upstream status codes", [target(
            f"sum by (status_code) (rate(claude_gateway_upstream_responses_total[{RATE}]))",
            "{{status_code}}")], "reqps", stack=True),
        timeseries("Upstream retries by reason", [target(
            f"sum by (reason) (rate(claude_gateway_upstream_retries_total[{RATE}]))",
            "{{reason}}")], "reqps"),
        timeseries("Mid-stream errors by type", [target(
            f"sum by (route, error_type) (rate(claude_gateway_stream_errors_total[{RATE}]))",
            "{{route}} {{error_type}}")], "reqps"),
        timeseries("Rejected requests by reason", [target(
            f"sum by (reason) (rate(claude_gateway_rejected_total[{RATE}]))", "{{reason}}")],
            "reqps"),
        timeseries("Versions running", [target(
            "count by (version) (claude_gateway_build_info)", "{{version}}")], "short",
            w=24, h=5),
    ]


def layout(panels: list[Panel]) -> list[Panel]:
    """Place panels left to right, wrapping at 24 columns; number them."""
    x = y = row_h = 0
    for number, panel in enumerate(panels, start=1):
        grid = panel["gridPos"]
        if panel["type"] == "row" or x + grid["w"] > 24:
            x, y = 0, y + row_h
            row_h = 0
        grid["x"], grid["y"] = x, y
        panel["id"] = number
        x += grid["w"]
        row_h = max(row_h, grid["h"])
        if panel["type"] == "row":
            x, y, row_h = 0, y + 1, 0
    return panels


def overview() -> dict[str, Any]:
    """The overview dashboard as Grafana JSON."""
    return {
        "uid": "claude-gateway-overview",
        "title": "Claude Stream Gateway / Overview",
        "description": "Streams, latency, tokens, cost, tools and upstream health of the gateway.",
        "tags": ["claude-gateway", "llm"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
             "options": []},
            {"name": "model", "label": "Model", "type": "query", "datasource": DS,
             "definition": "label_values(claude_gateway_tokens_total, model)",
             "query": {"query": "label_values(claude_gateway_tokens_total, model)",
                       "refId": "PrometheusVariableQueryEditor-VariableQuery"},
             "includeAll": True, "multi": True, "allValue": ".*",
             "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
             "refresh": 2, "sort": 1, "hide": 0, "regex": "", "options": []},
        ]},
        "panels": layout(overview_panels()),
    }


DASHBOARDS = {OUTPUT: overview}


def render(build: Any) -> str:  # noqa: ANN401 - a dashboard factory
    """The JSON text committed for one dashboard factory."""
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    """Write every dashboard; ``--check`` only compares and fails on a difference."""
    check = "--check" in sys.argv[1:]
    stale = []
    for path, build in DASHBOARDS.items():
        text = render(build)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}; run python dashboards/build.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
