"""The demo tools the agent endpoint offers: a sample database, a calculator and a clock.

``build_demo_registry(db_path=None)`` returns a ``ToolRegistry`` holding, in this order
(the simulator calls the *first* offered tool, so the most tolerant one comes first):

* ``search_database`` — word search over an embedded SQLite database of fictional
  customers, products and orders (``demo_data.sql``, shipped in the package). Each word of
  the query (stop words dropped) is matched with a parameterised ``LIKE`` over a table's
  text columns; rows matching the most words come first. A query that matches nothing
  returns ``[]``, never an error: the model often searches with loose prompt words.
* ``calculator`` — arithmetic evaluated from the ``ast``: numbers, ``+ - * / // % **``,
  parentheses and signs; everything else is refused, and sizes are bounded so ``9**9**9``
  cannot stall the process.
* ``get_current_time`` — the current time in an IANA zone (``zoneinfo``).

The database is built when the registry is built (never at import): in memory, or in the
file ``db_path`` (filled if it has no tables yet). One connection serves every call from a
worker thread, behind a lock, in read-only mode (``PRAGMA query_only``); the queries are
small and bounded, so a timed-out call cannot leave long work behind. ``registry.close()``
closes the connection.
"""

from __future__ import annotations

import ast
import asyncio
import math
import operator
import re
import sqlite3
import threading
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from gateway.agent.tools import Tool, ToolError, ToolRegistry

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("build_demo_registry",)

# Per table: the columns returned and the text the query words are matched against. Only
# these constants ever reach SQL text; every value is a bound parameter.
_TABLES: dict[str, tuple[str, str]] = {
    "customers": (
        "SELECT id, name, email, city, country, tier, created_at, {score} AS score "
        "FROM customers",
        "name || ' ' || email || ' ' || city || ' ' || country || ' ' || tier",
    ),
    "products": (
        "SELECT id, name, category, description, price_usd, stock, {score} AS score "
        "FROM products",
        "name || ' ' || category || ' ' || description",
    ),
    "orders": (
        "SELECT o.id AS id, c.name AS customer, p.name AS product, o.quantity AS quantity, "
        "o.total_usd AS total_usd, o.status AS status, o.ordered_at AS ordered_at, "
        "{score} AS score FROM orders o JOIN customers c ON c.id = o.customer_id "
        "JOIN products p ON p.id = o.product_id",
        "c.name || ' ' || p.name || ' ' || o.status",
    ),
}
_STOP_WORDS = frozenset({
    "a", "an", "and", "any", "are", "by", "can", "customer", "customers", "do", "find", "for",
    "from", "get", "give", "in", "is", "list", "look", "me", "of", "on", "or", "order",
    "orders", "please", "product", "products", "search", "show", "some", "the", "to", "up",
    "what", "which", "who", "with",
})
_MAX_TERMS = 8


class _DemoDatabase:
    """The sample database behind one connection, used from worker threads under a lock."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        has_tables = self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if not has_tables:
            script = resources.files("gateway.agent").joinpath("demo_data.sql").read_text("utf-8")
            self._conn.executescript(script)
        self._conn.execute("PRAGMA query_only = ON")

    def search(self, query: str, table: str | None, limit: int) -> list[dict[str, Any]]:
        words = dict.fromkeys(w for w in re.findall(r"[^\W_]+", query.lower()) if len(w) > 1)
        terms = [w for w in words if w not in _STOP_WORDS][:_MAX_TERMS]
        # Escape LIKE wildcards so a query word is matched literally.
        patterns = ["%" + re.sub(r"([\\%_])", r"\\\1", t) + "%" for t in terms]
        rows: list[dict[str, Any]] = []
        with self._lock:
            for name in [table] if table else list(_TABLES):
                select, haystack = _TABLES[name]
                score = " + ".join([f"({haystack} LIKE ? ESCAPE '\\')"] * len(terms)) or "0"
                sql = (
                    f"SELECT * FROM ({select.format(score=score)}) "  # noqa: S608 - constants only
                    "WHERE score >= ? ORDER BY score DESC, id LIMIT ?"
                )
                cursor = self._conn.execute(sql, [*patterns, 1 if terms else 0, limit])
                rows.extend({"table": name, **dict(row)} for row in cursor)
        rows.sort(key=lambda r: -int(r["score"]))  # stable: ties keep table then id order
        return [{k: v for k, v in r.items() if k != "score"} for r in rows[:limit]]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_MAX_ABS = 10**100  # beyond this no answer is useful, and bigints start to cost real time


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    value: int | float
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            raise ToolError("only numbers are allowed")
        value = node.value
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _evaluate(node.operand)
        value = -operand if isinstance(node.op, ast.USub) else operand
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        # For a power, judge the size of the answer before computing it.
        if isinstance(node.op, ast.Pow) and abs(left) > 1 and (
            abs(right) > 1000 or right * math.log10(abs(left)) > 100
        ):
            raise ToolError("result too large")
        try:
            value = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError("result too large") from None
    else:
        raise ToolError("only numbers, + - * / // % ** and parentheses are allowed")
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ToolError("the result is not a real number")
    if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > _MAX_ABS:
        raise ToolError("result too large")
    return value


async def _calculator(tool_input: dict[str, Any]) -> dict[str, Any]:
    expression = tool_input["expression"]
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError):
        raise ToolError("not an arithmetic expression") from None
    return {"expression": expression, "result": _evaluate(tree)}


async def _get_current_time(tool_input: dict[str, Any]) -> dict[str, Any]:
    name = tool_input.get("timezone") or "UTC"
    try:
        zone = ZoneInfo(name)
    except Exception:  # noqa: BLE001 - ZoneInfo raises several types for a bad key
        raise ToolError(f"unknown timezone: {name}") from None
    now = datetime.now(UTC).astimezone(zone)
    return {
        "timezone": name,
        "datetime": now.isoformat(timespec="seconds"),
        "utc_offset": now.strftime("%z")[:3] + ":" + now.strftime("%z")[3:],
        "abbreviation": now.tzname(),
        "weekday": now.strftime("%A"),
    }


def build_demo_registry(db_path: str | None = None) -> ToolRegistry:
    """Build the registry of demo tools and their sample database.

    Args:
        db_path: SQLite file to use (created and filled when empty); in memory when ``None``.

    Returns:
        A registry with ``search_database``, ``calculator`` and ``get_current_time``;
        call its ``close()`` at shutdown.
    """
    database = _DemoDatabase(db_path or ":memory:")
    registry = ToolRegistry()
    registry.on_close(database.close)

    async def search_database(tool_input: dict[str, Any]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(
            database.search,
            tool_input["query"],
            tool_input.get("table"),
            tool_input.get("limit", 10),
        )

    registry.register(Tool(
        name="search_database",
        description=(
            "Search the company's sample database of customers, products and orders by "
            "keywords (names, cities, countries, product categories, order status). Returns "
            "matching rows as JSON objects, best matches first; an empty list means no match."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "query": {"type": "string", "maxLength": 500,
                          "description": "Keywords to look for, e.g. 'Berlin enterprise'."},
                "table": {"type": "string", "enum": sorted(_TABLES),
                          "description": "Only search this table; all tables when omitted."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10,
                          "description": "Most rows to return."},
            },
            "required": ["query"],
            "additionalProperties": False,
        },
        handler=search_database,
        timeout_seconds=5.0,
    ))
    registry.register(Tool(
        name="calculator",
        description=(
            "Evaluate an arithmetic expression exactly: numbers, + - * / // % ** and "
            "parentheses. Use it for any calculation instead of computing in your head."
        ),
        input_schema={
            "type": "object",
            "properties": {"expression": {"type": "string", "minLength": 1, "maxLength": 200,
                                          "description": "For example '(17.5 * 4) / 3'."}},
            "required": ["expression"],
            "additionalProperties": False,
        },
        handler=_calculator,
        timeout_seconds=2.0,
    ))
    registry.register(Tool(
        name="get_current_time",
        description="Get the current date and time in an IANA time zone such as Europe/Paris.",
        input_schema={
            "type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 64, "default": "UTC",
                                        "description": "IANA zone name; UTC when omitted."}},
            "additionalProperties": False,
        },
        handler=_get_current_time,
        timeout_seconds=2.0,
    ))
    return registry
