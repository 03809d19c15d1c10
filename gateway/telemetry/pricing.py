"""Model prices and the cost of one request, from the token usage Anthropic reports.

The table ships as ``prices.json`` next to this module (USD per million tokens) and an operator
file (``GATEWAY_PRICES_FILE``, same shape) replaces or adds whole model entries, so a price
change or a new model needs no release. Price rules that depend on the request, such as Haiku
5.5's long-prompt tier, live in the data (``tiers``), not in code.

Cost (reference: Anthropic pricing page)::

    ( input * in + (cache_write - cache_write_1h) * w5m + cache_write_1h * w1h
      + cache_read * hit + output * out ) / 1e6

A tier applies to the whole request, output included, once the prompt (input + cache reads +
cache writes) exceeds its ``above_prompt_tokens``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ("ModelPrice", "PriceFileError", "PriceTable", "Quote", "Rates", "Usage", "base_model")

_RATES = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_ENTRY_KEYS = frozenset({*_RATES, "tiers", "aliases"})
_TIER_KEYS = frozenset({*_RATES, "above_prompt_tokens"})
# Dated snapshots (claude-haiku-4-5-20251001) and Vertex's form (claude-haiku-4-5@20251001).
_DATE_SUFFIX = re.compile(r"[-@]\d{8}$")
_CACHE_LIMIT = 1024


class PriceFileError(ValueError):
    """A price file is malformed; the message names the file and the entry."""


class Usage:
    """Token counts of one request, as Anthropic reports them (final, cumulative values).

    Args:
        input_tokens: Uncached input tokens.
        output_tokens: Output tokens.
        cache_read_tokens: Input tokens read from the cache.
        cache_write_tokens: All of ``cache_creation_input_tokens``, the 1-hour part included.
        cache_write_1h_tokens: The ``ephemeral_1h_input_tokens`` part of ``cache_write_tokens``.
    """

    # A written __init__ (compiled, setup.py), not a dataclass's generated Python: one is made
    # per stream.
    def __init__(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
    ) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cache_read_tokens = cache_read_tokens
        self.cache_write_tokens = cache_write_tokens
        self.cache_write_1h_tokens = cache_write_1h_tokens

    @property
    def prompt_tokens(self) -> int:
        """Input, cache reads and cache writes: the prompt size price tiers look at."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float

    def cost(self, usage: Usage) -> float:
        """Price ``usage`` at these rates, in USD."""
        one_hour = min(usage.cache_write_1h_tokens, usage.cache_write_tokens)
        return (
            usage.input_tokens * self.input
            + (usage.cache_write_tokens - one_hour) * self.cache_write_5m
            + one_hour * self.cache_write_1h
            + usage.cache_read_tokens * self.cache_read
            + usage.output_tokens * self.output
        ) / 1_000_000


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's base rates and its prompt-size tiers (ascending thresholds)."""

    base: Rates
    tiers: tuple[tuple[int, Rates], ...] = ()

    def rates_for(self, usage: Usage) -> Rates:
        """The rates that apply to a request of this size."""
        rates = self.base
        prompt = usage.prompt_tokens
        for threshold, tier in self.tiers:
            if prompt > threshold:
                rates = tier
        return rates


class Quote(NamedTuple):
    """A request's cost and whether the model had a price at all (count it if not)."""

    usd: float
    priced: bool


def base_model(model: str) -> str:
    """Strip a snapshot date suffix: ``claude-haiku-4-5-20251001`` → ``claude-haiku-4-5``."""
    return _DATE_SUFFIX.sub("", model)


class PriceTable:
    """Prices by model id, with aliases and dated ids resolved to their entry.

    Build it with :meth:`load`; it is read-only afterwards and safe to share.
    """

    __slots__ = ("_aliases", "_cache", "_known", "_prices")

    def __init__(self, prices: dict[str, ModelPrice], aliases: dict[str, str]) -> None:
        self._prices = prices
        self._aliases = aliases
        self._cache: dict[str, str | None] = {}
        # Built once: callers pass it per stream, and a frozenset caches its own hash.
        self._known = frozenset(prices) | frozenset(aliases)

    @classmethod
    def load(cls, override_path: str | None = None) -> PriceTable:
        """Read the shipped table, then the operator's file over it.

        Args:
            override_path: ``settings.prices_file``; empty or None for the shipped table only.

        Raises:
            PriceFileError: A file is not valid JSON or an entry is malformed.
        """
        shipped = resources.files("gateway.telemetry").joinpath("prices.json")
        prices: dict[str, ModelPrice] = {}
        aliases: dict[str, str] = {}
        sources = [("prices.json (shipped)", shipped.read_text(encoding="utf-8"))]
        if override_path:
            try:
                sources.append((override_path, Path(override_path).read_text(encoding="utf-8")))
            except OSError as exc:
                raise PriceFileError(f"prices file {override_path}: {exc.strerror}") from None
        for name, text in sources:
            for model, (price, names) in _parse(name, text).items():
                prices[model] = price
                aliases.update(dict.fromkeys(names, model))
        return cls(prices, aliases)

    @property
    def known_models(self) -> frozenset[str]:
        """Every model id and alias priced (the bounded ``model`` label values)."""
        return self._known

    def resolve(self, model: str | None) -> str | None:
        """Return the table entry ``model`` prices at, or None when unknown."""
        if not model:
            return None
        try:
            return self._cache[model]
        except KeyError:
            pass
        found = None
        for candidate in (model, base_model(model)):
            found = candidate if candidate in self._prices else self._aliases.get(candidate)
            if found:
                break
        if len(self._cache) < _CACHE_LIMIT:  # model names come from clients: stay bounded
            self._cache[model] = found
        return found

    def price(self, model: str | None) -> ModelPrice | None:
        """The price entry for ``model``, or None."""
        entry = self.resolve(model)
        return None if entry is None else self._prices[entry]

    def quote(self, model: str | None, usage: Usage) -> Quote:
        """Cost of ``usage`` on ``model``; ``Quote(0.0, priced=False)`` for an unknown model."""
        price = self.price(model)
        if price is None:
            return Quote(0.0, priced=False)
        return Quote(price.rates_for(usage).cost(usage), priced=True)

    def cost_usd(self, model: str | None, usage: Usage) -> float:
        """Cost of ``usage`` on ``model`` in USD; 0.0 when the model has no price."""
        return self.quote(model, usage).usd


def _parse(source: str, text: str) -> dict[str, tuple[ModelPrice, list[str]]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PriceFileError(f"prices file {source}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        raise PriceFileError(f"prices file {source}: expected an object with a 'models' object")
    out: dict[str, tuple[ModelPrice, list[str]]] = {}
    for model, entry in doc["models"].items():
        where = f"prices file {source}: entry {model!r}"
        if not isinstance(entry, dict):
            raise PriceFileError(f"{where}: expected an object")
        _check_keys(where, entry, _ENTRY_KEYS)
        tiers: list[tuple[int, Rates]] = []
        for i, tier in enumerate(entry.get("tiers", [])):
            at = f"{where} tier {i}"
            if not isinstance(tier, dict):
                raise PriceFileError(f"{at}: expected an object")
            _check_keys(at, tier, _TIER_KEYS)
            threshold = tier.get("above_prompt_tokens")
            if type(threshold) is not int or threshold < 0:
                raise PriceFileError(f"{at}: 'above_prompt_tokens' must be an integer >= 0")
            tiers.append((threshold, _rates(at, tier)))
        names = entry.get("aliases", [])
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise PriceFileError(f"{where}: 'aliases' must be a list of model ids")
        tiers.sort(key=lambda tier: tier[0])
        out[model] = (ModelPrice(_rates(where, entry), tuple(tiers)), names)
    return out


def _check_keys(where: str, obj: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:  # a typo such as "ouput" would otherwise price silently at nothing
        raise PriceFileError(f"{where}: unknown field(s) {', '.join(unknown)}")


def _rates(where: str, obj: dict[str, Any]) -> Rates:
    values: dict[str, float] = {}
    for name in _RATES:
        value = obj.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise PriceFileError(f"{where}: {name!r} must be a number >= 0, got {value!r}")
        values[name] = float(value)
    return Rates(**values)
