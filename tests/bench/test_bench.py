"""``claude-gateway bench`` runs and prints well-formed output.

Only shape is checked here (every figure present, finite and non-negative); how fast anything is
belongs in ``docs/performance.md``, never in an assertion.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import ROOT

TINY = ["--quiet", "--duration", "0.6", "--warmup", "0.2", "--concurrency", "3", "--events", "12"]


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", *args], cwd=ROOT, capture_output=True,
        text=True, timeout=90, check=False, env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
                                                  "GATEWAY_ENV_FILE": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def _check_doc(doc: dict[str, Any], scenario: str) -> None:
    assert doc["schema"] == "claude-gateway-bench/1"
    assert set(doc) == {"schema", "machine", "config", "results", "targets", "notes"}
    assert doc["machine"]["cores"] >= 1
    assert doc["machine"]["python"]
    assert Path(doc["machine"]["python_executable"]).is_file()
    assert doc["config"]["scenario"] == scenario
    for verdict in doc["targets"].values():
        assert set(verdict) == {"value", "limit", "pass"}
        assert verdict["pass"] in (True, False, None)
    assert all(isinstance(n, str) for n in doc["notes"])


def test_throughput_json_is_well_formed() -> None:
    doc = json.loads(_bench("--json", "--telemetry", "on", "--rounds", "2", "--floor", *TINY).stdout)
    _check_doc(doc, "throughput")
    results = doc["results"]
    assert {"direct", "gateway", "python_floor", "python_relay"} <= set(results)
    for name, leg in results.items():
        for phase in ("saturation", "paced"):
            figures = leg[phase]
            assert figures["errors"] == 0, (name, phase, figures["error_samples"])
            assert figures["streams"] > 0
            assert figures["ttft_p50_ms"] > 0
            assert figures["ttft_p99_ms"] >= figures["ttft_p50_ms"]
        assert leg["saturation"]["streams_per_s"] > 0
        assert leg["saturation"]["events_per_stream"] == pytest.approx(12, abs=0.5)
        assert leg["paced"]["gap_p99_ms"] >= leg["paced"]["gap_p50_ms"] >= 0
        if name != "direct":
            assert leg["saturation"]["cpu_us_per_event"] > 0
        if name in {"nginx", "gateway", "python_floor", "python_relay"}:  # the compared legs ran twice (--rounds 2)
            assert len(leg["saturation"]["cpu_us_per_event_rounds"]) == 2
            assert leg["saturation"]["rss_peak_mb"] > 0
    for n in _numbers(results):
        assert math.isfinite(n)
    assert {"cpu_per_event_vs_nginx_saturation", "cpu_per_event_vs_nginx_paced",
            "added_ttft_p50_ms", "added_ttft_p99_ms"} <= set(doc["targets"])


def test_open_streams_prints_one_table() -> None:
    out = _bench("--scenario", "open-streams", "--concurrency", "20", "--ramp", "0.5",
                 "--duration", "1", "--token-rate", "10", "--quiet").stdout
    lines = out.splitlines()
    assert lines[0].startswith("claude-gateway bench — open-streams")
    header = next(line for line in lines if line.startswith("metric"))
    assert "gateway" in header.split()
    held = next(line for line in lines if line.startswith("streams held"))
    assert held.split()[-2:] == ["20", "(1.00x)"]
    assert "errors" in out
    assert "rss_at_peak_mb" in out


def test_soak_reports_memory_samples() -> None:
    doc = json.loads(_bench("--json", "--scenario", "soak", *TINY).stdout)
    _check_doc(doc, "soak")
    leg = doc["results"]["gateway"]
    assert leg["errors"] == 0
    assert leg["streams"] > 0
    assert len(leg["rss_samples_mb"]) >= 1
    assert all(rss > 0 for _, rss in leg["rss_samples_mb"])
