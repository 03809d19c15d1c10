"""The shipped price table, cost computation, tiers and operator overrides."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from gateway.telemetry.pricing import PriceFileError, PriceTable, Quote, Usage, base_model

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


def test_shipped_table_has_current_and_legacy_models(table: PriceTable) -> None:
    for model in ("claude-fable-5-2", "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5",
                  "claude-opus-4-8", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"):
        assert model in table.known_models


@pytest.mark.parametrize(
    ("model", "usage", "expected"),
    [
        # Opus 5.5: $4 in, $20 out.
        ("claude-opus-5-5", Usage(input_tokens=1_000_000, output_tokens=1_000_000), 24.0),
        # Sonnet 4.6: 2000*3 + 500*15 + 10_000*0.30 (reads) + 4000*3.75 (5m writes)
        ("claude-sonnet-4-6",
         Usage(input_tokens=2000, output_tokens=500, cache_read_tokens=10_000,
               cache_write_tokens=4000),
         (2000 * 3 + 500 * 15 + 10_000 * 0.30 + 4000 * 3.75) / 1e6),
        # Haiku 4.5 with 1h writes: 3000 of 5000 writes at $2, the remaining 2000 at $1.25.
        ("claude-haiku-4-5",
         Usage(input_tokens=100, output_tokens=200, cache_write_tokens=5000,
               cache_write_1h_tokens=3000),
         (100 * 1 + 200 * 5 + 2000 * 1.25 + 3000 * 2) / 1e6),
        # Fable 5.2: $8 / $40, cache read $0.20.
        ("claude-fable-5-2", Usage(input_tokens=10, output_tokens=10, cache_read_tokens=1000),
         (10 * 8 + 10 * 40 + 1000 * 0.2) / 1e6),
    ],
)
def test_cost(table: PriceTable, model: str, usage: Usage, expected: float) -> None:
    assert table.cost_usd(model, usage) == pytest.approx(expected)


def test_haiku_5_5_long_prompt_tier_bills_whole_request(table: PriceTable) -> None:
    short = Usage(input_tokens=50_000, output_tokens=1000, cache_read_tokens=50_000)
    assert short.prompt_tokens == 100_000  # exactly at the threshold: base rates
    assert table.cost_usd("claude-haiku-5-5", short) == pytest.approx(
        (50_000 * 0.10 + 1000 * 0.50 + 50_000 * 0.01) / 1e6
    )
    # One cache-write token more crosses it: every token, output included, at the tier rates.
    long = Usage(input_tokens=50_000, output_tokens=1000, cache_read_tokens=50_000,
                 cache_write_tokens=1)
    assert table.cost_usd("claude-haiku-5-5", long) == pytest.approx(
        (50_000 * 0.50 + 1000 * 2.50 + 50_000 * 0.05 + 1 * 0.625) / 1e6
    )


def test_dated_ids_and_aliases_resolve(table: PriceTable) -> None:
    usage = Usage(input_tokens=1_000_000)
    assert table.cost_usd("claude-haiku-4-5-20251001", usage) == pytest.approx(1.0)
    assert table.cost_usd("claude-sonnet-4-5@20250929", usage) == pytest.approx(3.0)
    assert table.resolve("claude-opus-4-20250514") == "claude-opus-4-0"
    assert base_model("claude-opus-4-5-20251101") == "claude-opus-4-5"


def test_unknown_model_is_flagged(table: PriceTable) -> None:
    assert table.quote("gpt-7", Usage(input_tokens=5)) == Quote(0.0, priced=False)
    assert table.quote(None, Usage()) == Quote(0.0, priced=False)
    assert table.quote("claude-opus-5", Usage()).priced


def test_resolve_cache_is_bounded(table: PriceTable) -> None:
    fresh = PriceTable.load()
    for i in range(3000):
        fresh.resolve(f"junk-{i}")
    assert len(fresh._cache) <= 1024
    assert fresh.resolve("junk-2999") is None


def test_override_replaces_and_extends(tmp_path: Path) -> None:
    override = tmp_path / "prices.json"
    override.write_text(json.dumps({"models": {
        "claude-opus-5-5": {"input": 1, "output": 2, "cache_write_5m": 0, "cache_write_1h": 0,
                            "cache_read": 0},
        "acme-model": {"input": 1, "output": 1, "cache_write_5m": 1, "cache_write_1h": 1,
                       "cache_read": 1, "aliases": ["acme"]},
    }}))
    table = PriceTable.load(str(override))
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert table.cost_usd("claude-opus-5-5", usage) == pytest.approx(3.0)
    assert table.cost_usd("acme", usage) == pytest.approx(2.0)
    assert table.cost_usd("claude-haiku-4-5", usage) == pytest.approx(6.0)  # shipped kept
    assert "acme-model" in table.known_models


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"m": {"input": 1}}, "entry 'm': 'output' must be a number"),
        ({"m": {"input": 1, "output": 1, "cache_write_5m": 1, "cache_write_1h": 1,
                "cache_read": 1, "ouput": 1}}, "entry 'm': unknown field"),
        ({"m": {"input": -1, "output": 1, "cache_write_5m": 1, "cache_write_1h": 1,
                "cache_read": 1}}, "'input' must be a number >= 0"),
        ({"m": {"input": 1, "output": 1, "cache_write_5m": 1, "cache_write_1h": 1,
                "cache_read": 1, "tiers": [{"input": 1}]}}, "entry 'm' tier 0"),
        ({"m": {"input": 1, "output": 1, "cache_write_5m": 1, "cache_write_1h": 1,
                "cache_read": True}}, "'cache_read' must be a number"),
        ({"m": "cheap"}, "entry 'm': expected an object"),
    ],
)
def test_bad_override_names_file_and_entry(tmp_path: Path, models: object, message: str) -> None:
    override = tmp_path / "bad.json"
    override.write_text(json.dumps({"models": models}))
    with pytest.raises(PriceFileError, match=message) as info:
        PriceTable.load(str(override))
    assert str(override) in str(info.value)


def test_override_not_json_or_missing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(PriceFileError, match="not JSON"):
        PriceTable.load(str(bad))
    bad.write_text("[]")
    with pytest.raises(PriceFileError, match="'models' object"):
        PriceTable.load(str(bad))
    with pytest.raises(PriceFileError, match=r"missing\.json"):
        PriceTable.load(str(tmp_path / "missing.json"))
