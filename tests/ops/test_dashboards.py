"""The committed dashboards are exactly what dashboards/build.py generates, and well-formed."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.servers import ROOT

BUILD = ROOT / "dashboards" / "build.py"


def _build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards_build", BUILD)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILDER = _build_module()
OVERVIEW = json.loads((ROOT / "dashboards" / "claude-gateway-overview.json").read_text())

REQUIRED_PANELS = {
    # issue item -> a metric its panel must query
    "request rate": "claude_gateway_requests_total",
    "active streams": "claude_gateway_active_streams",
    "TTFT": "claude_gateway_time_to_first_token_seconds_bucket",
    "overhead": "claude_gateway_overhead_seconds_bucket",
    "time per output token": "claude_gateway_time_per_output_token_seconds_bucket",
    "tokens": "claude_gateway_tokens_total",
    "cost": "claude_gateway_cost_usd_total",
    "tool latency": "claude_gateway_tool_duration_seconds_bucket",
    "upstream status": "claude_gateway_upstream_responses_total",
    "retries": "claude_gateway_upstream_retries_total",
    "client disconnects": "claude_gateway_client_disconnects_total",
}


def test_committed_json_matches_the_generator() -> None:
    """`python dashboards/build.py` would not change any committed dashboard."""
    for path, build in BUILDER.DASHBOARDS.items():
        assert path.read_text() == BUILDER.render(build), f"{path.name} is stale"


def test_every_issue_panel_is_there() -> None:
    """Each panel the issue asks for queries its metric."""
    exprs = " ".join(t["expr"] for p in OVERVIEW["panels"] for t in p.get("targets", []))
    missing = [name for name, metric in REQUIRED_PANELS.items() if metric not in exprs]
    assert not missing


def test_ttft_quantiles_by_model_and_cost_per_hour() -> None:
    """TTFT p50/p95/p99 by model; cost scaled to an hour; error ratio by outcome."""
    by_title = {p["title"]: p for p in OVERVIEW["panels"]}
    ttft = [t["expr"] for t in by_title["Time to first token by model"]["targets"]]
    assert [re.match(r"histogram_quantile\(([\d.]+)", e).group(1) for e in ttft] == [  # type: ignore[union-attr]
        "0.5", "0.95", "0.99"]
    assert all("by (le, model)" in e and 'model=~"$model"' in e for e in ttft)
    assert "* 3600" in by_title["Cost per hour by model"]["targets"][0]["expr"]
    assert "by (outcome)" in by_title["Error ratio by outcome"]["targets"][0]["expr"]


def test_variables_and_exemplars() -> None:
    """A datasource and a model variable; exemplars on every histogram query."""
    variables = {v["name"]: v for v in OVERVIEW["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["model"]["definition"] == "label_values(claude_gateway_tokens_total, model)"
    assert variables["model"]["includeAll"] is True
    for panel in OVERVIEW["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            if "histogram_quantile" in target["expr"] and panel["type"] == "timeseries":
                assert target["exemplar"] is True, panel["title"]


@pytest.mark.parametrize("path", sorted((ROOT / "dashboards").glob("*.json")), ids=str)
def test_layout_is_sane(path: Path) -> None:
    """Unique panel ids, panels inside the 24-column grid and not overlapping."""
    dashboard = json.loads(path.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0
        assert g["x"] + g["w"] <= 24
        own = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not own & cells, panel["title"]
        cells |= own
    assert dashboard["uid"]
    assert dashboard["schemaVersion"] >= 36
