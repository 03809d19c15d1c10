"""The demo tools against their real embedded SQLite database."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from gateway.agent.demo_tools import build_demo_registry

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from gateway.agent.tools import ToolRegistry


@pytest.fixture
def registry() -> Iterator[ToolRegistry]:
    reg = build_demo_registry()
    yield reg
    reg.close()


async def run(registry: ToolRegistry, name: str, tool_input: dict[str, Any]) -> Any:
    outcome = await registry.execute(name, tool_input)
    assert not outcome.is_error, outcome.error
    assert outcome.output is not None
    return json.loads(outcome.output)


def test_search_database_is_offered_first(registry: ToolRegistry) -> None:
    assert registry.names == ("search_database", "calculator", "get_current_time")
    required = registry.definitions()[0]["input_schema"]["required"]
    assert required == ["query"]


async def test_search_customers_by_city(registry: ToolRegistry) -> None:
    rows = await run(registry, "search_database", {"query": "Berlin", "table": "customers"})
    assert rows
    assert all(r["city"] == "Berlin" and r["table"] == "customers" for r in rows)
    assert set(rows[0]) == {"table", "id", "name", "email", "city", "country", "tier",
                            "created_at"}


async def test_best_matches_first_across_tables(registry: ToolRegistry) -> None:
    rows = await run(registry, "search_database",
                     {"query": "find customers in Berlin on the enterprise tier", "limit": 50})
    assert rows
    first = rows[0]
    assert first["city"] == "Berlin"
    assert first["tier"] == "enterprise"


async def test_search_products_and_orders(registry: ToolRegistry) -> None:
    products = await run(registry, "search_database", {"query": "coffee", "table": "products"})
    assert {p["name"] for p in products} >= {"Harbor Coffee Grinder", "Ember Pour-Over Kettle"}
    orders = await run(registry, "search_database",
                       {"query": "refunded", "table": "orders", "limit": 5})
    assert len(orders) == 5
    assert all(o["status"] == "refunded" and "customer" in o and "product" in o for o in orders)


@pytest.mark.parametrize("query", ["zzzqqq", "ünïcødé ∑", "zz%qq_zz", "qq\\zz"])
async def test_no_match_returns_empty_list(registry: ToolRegistry, query: str) -> None:
    assert await run(registry, "search_database", {"query": query}) == []


@pytest.mark.parametrize(
    "query", ["'; DROP TABLE customers; --", "Berlin') OR ('1'='1"]
)
async def test_hostile_queries_are_plain_words(registry: ToolRegistry, query: str) -> None:
    rows = await run(registry, "search_database", {"query": query, "limit": 50})
    assert len(rows) < 50  # matched as words, not as SQL (which would return everything)
    assert await run(registry, "search_database", {"query": "Berlin", "table": "customers"})


async def test_empty_query_browses_and_limit_is_bounded(registry: ToolRegistry) -> None:
    rows = await run(registry, "search_database", {"query": "", "limit": 50})
    assert len(rows) == 50
    outcome = await registry.execute("search_database", {"query": "x", "limit": 51})
    assert outcome.is_error
    outcome = await registry.execute("search_database", {"query": "x", "table": "users"})
    assert outcome.is_error


async def test_file_database_is_created_once(tmp_path: Path) -> None:
    path = str(tmp_path / "demo.db")
    for _ in range(2):
        reg = build_demo_registry(path)
        rows = await run(reg, "search_database", {"query": "Lisbon", "table": "customers"})
        assert rows
        reg.close()


@pytest.mark.parametrize(
    ("expression", "result"),
    [("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("-2 ** 2", -4), ("7 // 2", 3), ("7 % 4", 3),
     ("1 / 4", 0.25), ("2 ** 10", 1024), ("+5 - -5", 10), ("0.5 ** -2", 4.0), ("10**100", 10**100)],
)
async def test_calculator(registry: ToolRegistry, expression: str, result: float) -> None:
    assert await run(registry, "calculator", {"expression": expression}) == {
        "expression": expression, "result": result}


@pytest.mark.parametrize(
    ("expression", "error"),
    [("9 ** 9 ** 9", "result too large"), ("10 ** 101", "result too large"),
     ("2 ** 5000", "result too large"), ("1e308 * 10", "result too large"),
     ("1 / 0", "division by zero"), ("1 % 0", "division by zero"),
     ("__import__('os')", "only numbers"), ("x + 1", "only numbers"), ("True + 1", "only"),
     ("1j", "only numbers"), ("'a' * 3", "only numbers"),
     ("(-8) ** 0.5", "the result is not a real"), ("1 +", "not an arithmetic"),
     ("[1, 2]", "only numbers"), ("1 < 2", "only numbers")],
)
async def test_calculator_refuses(registry: ToolRegistry, expression: str, error: str) -> None:
    outcome = await registry.execute("calculator", {"expression": expression})
    assert outcome.is_error
    assert outcome.error is not None
    assert outcome.error.startswith(error)


async def test_current_time(registry: ToolRegistry) -> None:
    paris = await run(registry, "get_current_time", {"timezone": "Europe/Paris"})
    assert paris["timezone"] == "Europe/Paris"
    assert paris["utc_offset"] in {"+01:00", "+02:00"}
    utc = await run(registry, "get_current_time", {})
    assert utc["utc_offset"] == "+00:00"
    for bad in ["Mars/Base", "../../etc/passwd", "", "America"]:
        outcome = await registry.execute("get_current_time", {"timezone": bad})
        if bad == "":
            assert not outcome.is_error  # empty means the default, UTC
            continue
        assert outcome.is_error
        assert outcome.error == f"unknown timezone: {bad}"
