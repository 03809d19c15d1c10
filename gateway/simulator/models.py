"""The model catalogue behind ``GET /v1/models`` and the model check of ``/v1/messages``."""

from __future__ import annotations

from typing import Any

__all__ = ("MODELS", "find_model", "is_known_model", "models_page")

# (id, display name, release date, line, max_input_tokens, max_tokens), newest first like the
# real listing. Ids are the SDK 2.12 ``Model`` literal (reference §6).
_CATALOG: tuple[tuple[str, str, str, str | None, int, int], ...] = (
    ("claude-fable-5-2", "Claude Fable 5.2", "2026-11-09", "fable", 1_000_000, 128_000),
    ("claude-mythos-5-2", "Claude Mythos 5.2", "2026-11-09", "mythos", 1_000_000, 128_000),
    ("claude-haiku-5-5", "Claude Haiku 5.5", "2026-10-07", "haiku", 1_000_000, 64_000),
    ("claude-sonnet-5-5", "Claude Sonnet 5.5", "2026-10-07", "sonnet", 1_000_000, 128_000),
    ("claude-opus-5-5", "Claude Opus 5.5", "2026-09-22", "opus", 1_000_000, 128_000),
    ("claude-fable-5-1", "Claude Fable 5.1", "2026-08-18", "fable", 1_000_000, 128_000),
    ("claude-mythos-5-1", "Claude Mythos 5.1", "2026-08-18", "mythos", 1_000_000, 128_000),
    ("claude-sonnet-5", "Claude Sonnet 5", "2026-06-30", "sonnet", 1_000_000, 128_000),
    ("claude-fable-5", "Claude Fable 5", "2026-06-02", "fable", 1_000_000, 128_000),
    ("claude-mythos-5", "Claude Mythos 5", "2026-06-02", "mythos", 1_000_000, 128_000),
    ("claude-opus-5", "Claude Opus 5", "2026-05-12", "opus", 1_000_000, 128_000),
    ("claude-opus-4-8", "Claude Opus 4.8", "2026-03-24", "opus", 1_000_000, 128_000),
    ("claude-opus-4-7", "Claude Opus 4.7", "2026-02-17", "opus", 1_000_000, 128_000),
    ("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05", "opus", 1_000_000, 128_000),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17", "sonnet", 1_000_000, 64_000),
    ("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24", "opus", 200_000, 64_000),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15", "haiku", 200_000, 64_000),
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29", "sonnet", 1_000_000, 64_000),
)

# Aliases the API resolves to a dated id (``claude-haiku-4-5`` → ``…-20251001``).
_ALIASES = {
    "claude-opus-4-5": "claude-opus-4-5-20251101",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
}


def _info(row: tuple[str, str, str, str | None, int, int]) -> dict[str, Any]:
    model_id, name, released, line, max_input, max_tokens = row
    return {
        "type": "model",
        "id": model_id,
        "display_name": name,
        "created_at": f"{released}T00:00:00Z",
        "lifecycle": "active",
        "deprecated_at": None,
        "retires_at": None,
        "line": line,
        "max_input_tokens": max_input,
        "max_tokens": max_tokens,
    }


MODELS: tuple[str, ...] = tuple(row[0] for row in _CATALOG)
"""Every model id in the catalogue, newest first."""


def find_model(model_id: str) -> dict[str, Any] | None:
    """The ``ModelInfo`` of ``model_id`` (aliases resolved), or None."""
    wanted = _ALIASES.get(model_id, model_id)
    for row in _CATALOG:
        if row[0] == wanted:
            return _info(row)
    return None


def is_known_model(model_id: str) -> bool:
    """Whether ``/v1/messages`` accepts ``model_id``.

    The real API answers 404 for unknown models; the simulator also accepts any other
    ``claude-`` id so tests can use made-up or future ids.
    """
    return model_id.startswith("claude-") or find_model(model_id) is not None


def models_page(
    limit: int = 20, after_id: str | None = None, before_id: str | None = None
) -> dict[str, Any]:
    """One page of ``GET /v1/models``: ``{data, has_more, first_id, last_id}``.

    Raises:
        ValueError: ``limit`` is outside 1..1000.
    """
    if not 1 <= limit <= 1000:
        raise ValueError("limit: must be between 1 and 1000")
    ids = list(MODELS)
    start, stop = 0, len(ids)
    if after_id is not None:
        start = ids.index(after_id) + 1 if after_id in ids else len(ids)
    if before_id is not None:
        stop = ids.index(before_id) if before_id in ids else 0
        # Paging backwards returns the ``limit`` entries just before ``before_id``.
        start = max(start, stop - limit)
    chosen = _CATALOG[start:stop][:limit]
    data = [_info(row) for row in chosen]
    has_more = (start + len(chosen) < stop) if before_id is None else start > 0
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
