"""Bounded ``model`` label values for metrics.

The model string comes from the client (request body) or the upstream (``message_start``),
so it cannot be a label as is: a client could mint a new time series per request. Known
model ids (the price table's) pass through, dated snapshots collapse onto their base id, and
everything else becomes ``other``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from gateway.telemetry.pricing import base_model

if TYPE_CHECKING:
    from collections.abc import Collection

__all__ = ("OTHER", "normalize_model")

OTHER = "other"
"""The label of every model not in the known set."""


def normalize_model(model: str | None, known: Collection[str]) -> str:
    """Map a model id to a bounded label.

    Args:
        model: The model id as seen (``claude-haiku-4-5-20251001``), or None.
        known: Known model ids, usually ``PriceTable.known_models``. A ``frozenset`` (what the
            price table returns) is cached; other collections work but are not.

    Returns:
        ``model`` if known, its base id if that is known, otherwise ``"other"``.
    """
    if not model:
        return OTHER
    if isinstance(known, frozenset):
        return _cached(model, known)
    return _normalize(model, known)


def _normalize(model: str, known: Collection[str]) -> str:
    if model in known:
        return model
    base = base_model(model)
    return base if base in known else OTHER


# Bounded: the strings come from clients. Keyed by (model, known); the table's frozenset is
# built once at start-up, so in practice the key varies by model only.
_cached = functools.lru_cache(maxsize=1024)(_normalize)
