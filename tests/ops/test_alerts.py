"""Alert rules: promtool accepts them, its unit tests pass, and every alert is fully documented."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.telemetry.metrics import GatewayMetrics
from tests.support.servers import ROOT

pytestmark = pytest.mark.system

PROM_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
UNIT_TESTS = sorted(PROM_DIR.glob("*_test.yml"))
SEVERITIES = {"critical", "warning"}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        raise RuntimeError("promtool is not installed; `make test` installs prometheus")
    return subprocess.run(
        [binary, *args], cwd=PROM_DIR, capture_output=True, text=True, check=False, timeout=120
    )


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts alerts.yml."""
    result = _promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("unit_tests", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(unit_tests: Path) -> None:
    """`promtool test rules`: each alert fires when it should and stays silent when it should not."""
    result = _promtool("test", "rules", unit_tests.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_firing_and_silent_unit_cases() -> None:
    """Each alert appears in the unit tests at least once firing and once silent."""
    fires: set[str] = set()
    silent: set[str] = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in _alert_rules()}
    assert names - fires == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"


@pytest.mark.parametrize("rule", _alert_rules(), ids=lambda r: r["alert"])
def test_alert_is_documented(rule: dict[str, Any]) -> None:
    """Summary, description, severity and a runbook in deploy/runbooks/ that names the alert."""
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert len(annotations["description"]) > 40
    assert rule["labels"]["severity"] in SEVERITIES
    url = annotations["runbook_url"]
    assert re.fullmatch(r"deploy/runbooks/[A-Za-z]+\.md", url), url
    runbook = ROOT / url
    assert runbook.is_file(), url
    text = runbook.read_text()
    assert rule["alert"] in text, f"{url} does not mention {rule['alert']}"
    for section in ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation"):
        assert section in text, f"{url} lacks {section}"


def contract_metric_names() -> set[str]:
    """Metric names the gateway registers (and, where present, the ones PRODUCT.md lists)."""
    registry = CollectorRegistry()
    GatewayMetrics(registry, version="test", max_streams=1)
    names = set()
    for family in registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
    contract = ROOT.parent / "shared" / "PRODUCT.md"
    if contract.exists():
        listed = set(re.findall(r"`(claude_gateway_[a-z_]+)`", contract.read_text()))
        assert listed <= names, f"the gateway does not register {listed - names}"
    return names


def test_alerts_use_only_contract_metric_names() -> None:
    """Every claude_gateway_* name used by the rules is a metric the gateway exports."""
    known = contract_metric_names()
    used = set(re.findall(r"\b(claude_gateway_[a-z_]+?)(?:_bucket|_count|_sum)?\b",
                          ALERTS.read_text()))
    assert used, "no metric found in the rules"
    assert used <= known, used - known
