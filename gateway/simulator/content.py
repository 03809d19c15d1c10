"""Deterministic output: readable text, thinking, signatures and tool inputs.

The same prompt always yields the same words (seeded from a hash of the prompt), so tests can
compare runs, while ids stay random elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
from typing import Any

__all__ = (
    "seed_of",
    "split_json",
    "text_pieces",
    "thinking_pieces",
    "thinking_signature",
    "tool_input",
    "topic_of",
)

_SENTENCES = (
    "Streaming keeps the first token close to the question.",
    "Each delta travels through the gateway without being buffered.",
    "The answer depends on a few details worth checking first.",
    "Here is a short summary of what matters most.",
    "Latency is measured from the request to the first visible word.",
    "Good observability turns a slow bucket into a single trace.",
    "The model reads the whole conversation before it replies.",
    "A careful plan beats a fast guess in most cases.",
    "Tools let the assistant fetch facts it cannot know alone.",
    "Usage figures grow with every token that is written.",
    "The weather in most cities changes faster than forecasts admit.",
    "Small steps make a long task easier to follow.",
    "Every stream ends with a stop reason and a final usage count.",
    "Caching the stable prefix saves both time and money.",
    "Errors are reported in the same shape the client already knows.",
    "A quiet connection is not always a dead one.",
    "Let me walk through the reasoning one step at a time.",
    "That covers the main points of your question.",
)
_THOUGHTS = (
    "The user is asking about {topic}, so I should start there.",
    "I need to decide whether a tool would help answer this.",
    "Let me check what information is already in the conversation.",
    "A concise answer with one concrete example should work.",
    "I should keep the reply focused on {topic}.",
    "There may be an edge case worth mentioning briefly.",
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_STOPWORDS = frozenset({
    "about", "after", "again", "also", "been", "being", "could", "does", "doing", "done",
    "from", "have", "hello", "here", "just", "know", "like", "make", "more", "please",
    "should", "some", "tell", "than", "that", "them", "then", "there", "these", "they",
    "this", "what", "when", "where", "which", "while", "with", "would", "your",
})
_KEYWORD = re.compile(r"\[sim:[a-z0-9_]+\]")
_STRING_HINTS = (
    (("city", "location", "place", "region"), "Paris"),
    (("country",), "France"),
    (("url", "uri", "link"), "https://example.com/"),
    (("path", "file", "filename"), "notes/todo.txt"),
    (("expression", "formula", "math"), "2 * (3 + 4)"),
    (("email",), "user@example.com"),
    (("date", "day"), "2026-11-24"),
    (("time",), "12:00"),
    (("unit", "units"), "celsius"),
    (("lang", "language"), "en"),
    (("timezone", "tz"), "Europe/Paris"),
    (("id",), "item-42"),
)


def seed_of(text: str) -> int:
    """A stable 64-bit seed of ``text`` (``hash()`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def topic_of(prompt: str) -> str:
    """A word or two of the prompt to echo back, so answers look related to the question."""
    words = [w.lower() for w in _WORD.findall(_KEYWORD.sub(" ", prompt))]
    words = [w for w in words if w not in _STOPWORDS]
    return " ".join(words[:2]) if words else "your question"


def text_pieces(seed: int, count: int, *, prefix: str = "") -> list[str]:
    """``count`` word pieces (``"Word"``, ``" next"``, …) of readable sentences.

    ``prefix`` (e.g. a sentence about a tool result) comes first, then seeded sentences.
    """
    rng = random.Random(seed)
    words: list[str] = prefix.split()
    while len(words) < count:
        words.extend(rng.choice(_SENTENCES).split())
    words = words[:count]
    if words and not words[-1].endswith((".", "!", "?")):
        words[-1] = words[-1].rstrip(",;:") + "."
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def thinking_pieces(seed: int, topic: str, count: int) -> list[str]:
    """``count`` thinking deltas, a sentence each (thinking streams in bigger chunks)."""
    rng = random.Random(seed ^ 0x7468696E6B)
    out: list[str] = []
    for i in range(count):
        sentence = rng.choice(_THOUGHTS).format(topic=topic)
        out.append(sentence if i == 0 else " " + sentence)
    return out


def thinking_signature(thinking: str) -> str:
    """An opaque, deterministic signature shaped like the real ones (base64, ``Eq…``)."""
    digest = hashlib.sha512(thinking.encode()).digest()
    return "Eq" + base64.b64encode(b"\x12\x0c" + digest + digest[:24]).decode()


def tool_input(schema: object, seed: int, topic: str) -> dict[str, Any]:
    """Plausible arguments for a tool: every required property gets a value of its type."""
    rng = random.Random(seed ^ 0x746F6F6C)
    if not isinstance(schema, dict):
        return {}
    value = _value(schema, "", rng, topic, depth=0)
    return value if isinstance(value, dict) else {}


def _value(schema: dict[str, Any], name: str, rng: random.Random, topic: str, depth: int) -> Any:  # noqa: ANN401, PLR0911, PLR0912 - by schema type
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options and isinstance(options[0], dict):
            return _value(options[0], name, rng, topic, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or (kind is None and "properties" in schema):
        props = _dict(schema.get("properties"))
        required = [r for r in schema.get("required", []) if isinstance(r, str)]
        if depth > 4:
            return {}
        return {key: _value(_dict(props.get(key)), key, rng, topic, depth + 1) for key in required}
    if kind == "array":
        items = _dict(schema.get("items"))
        size = max(1, int(schema.get("minItems", 1)))
        return [_value(items, name, rng, topic, depth + 1) for _ in range(min(size, 5))]
    if kind == "integer":
        low = int(schema.get("minimum", 1))
        high = int(schema.get("maximum", max(low, 1) + 9))
        return rng.randint(low, max(low, high))
    if kind == "number":
        lo = float(schema.get("minimum", 0.0))
        hi = float(schema.get("maximum", lo + 10.0))
        return round(rng.uniform(lo, max(lo, hi)), 2)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(name.lower(), topic, schema)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _string(name: str, topic: str, schema: dict[str, Any]) -> str:
    for hints, value in _STRING_HINTS:
        if any(h == name or name.endswith("_" + h) or name.startswith(h) for h in hints):
            return value
    # Anything else (query, text, topic…) echoes the prompt, which reads as plausible input.
    min_len = int(schema.get("minLength", 0) or 0)
    return topic.ljust(min_len, "x")


def split_json(value: dict[str, Any], seed: int) -> list[str]:
    """Serialize ``value`` and cut it into fragments like ``input_json_delta`` pieces.

    The first fragment is ``""`` like the real API; the concatenation is the JSON text.
    """
    text = json.dumps(value, ensure_ascii=False)
    rng = random.Random(seed ^ 0x6A736F6E)
    pieces = [""]
    pos = 0
    while pos < len(text):
        step = rng.randint(3, 12)
        pieces.append(text[pos : pos + step])
        pos += step
    return pieces
