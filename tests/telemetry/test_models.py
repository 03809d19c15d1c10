"""Bounded model labels."""

from __future__ import annotations

from gateway.telemetry.models import OTHER, normalize_model
from gateway.telemetry.pricing import PriceTable


def test_known_dated_and_unknown() -> None:
    known = PriceTable.load().known_models
    assert normalize_model("claude-opus-5-5", known) == "claude-opus-5-5"
    assert normalize_model("claude-haiku-4-5-20251001", known) == "claude-haiku-4-5"
    assert normalize_model("claude-opus-4-20250514", known) == "claude-opus-4"
    assert normalize_model("claude-3-opus-latest", known) == OTHER
    assert normalize_model("'; drop table", known) == OTHER
    assert normalize_model(None, known) == OTHER
    assert normalize_model("", known) == OTHER


def test_plain_collections_work_uncached() -> None:
    assert normalize_model("a-20250101", ["a"]) == "a"
    assert normalize_model("b", {"a"}) == OTHER


def test_labels_stay_bounded_for_many_distinct_inputs() -> None:
    known = frozenset({"claude-x"})
    labels = {normalize_model(f"claude-x-{i}", known) for i in range(5000)}
    assert labels == {OTHER}
