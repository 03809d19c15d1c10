"""Merging a leg's rounds: medians, sums, and the spread kept."""

from __future__ import annotations

from typing import Any

from gateway.bench.legs import merge_rounds


def leg(cpu: float | None, ttft: float, errors: int = 0) -> dict[str, Any]:
    phase = {"streams": 10, "errors": errors, "error_samples": ["x"] * errors, "cpu_us_per_event": cpu,
             "ttft_p50_ms": ttft, "cpu_split": [0.6, 0.4]}
    return {"saturation": dict(phase), "paced": dict(phase)}


def test_one_round_is_left_as_it_is() -> None:
    one = leg(20.0, 3.0)
    assert merge_rounds([one]) is one


def test_figures_are_medians_and_counts_sums() -> None:
    merged = merge_rounds([leg(30.0, 9.0, errors=1), leg(20.0, 3.0), leg(22.0, 4.0, errors=6)])
    sat = merged["saturation"]
    assert sat["cpu_us_per_event"] == 22.0
    assert sat["ttft_p50_ms"] == 4.0
    assert sat["streams"] == 30
    assert sat["errors"] == 7
    assert len(sat["error_samples"]) == 5
    assert sat["cpu_us_per_event_rounds"] == [30.0, 20.0, 22.0]
    assert sat["cpu_split"] == [0.6, 0.4]


def test_a_missing_figure_stays_missing() -> None:
    merged = merge_rounds([leg(None, 3.0), leg(None, 5.0)])
    assert merged["paced"]["cpu_us_per_event"] is None
    assert merged["paced"]["ttft_p50_ms"] == 4.0
