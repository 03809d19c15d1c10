"""The agent endpoint: a server-side tool loop streamed as normalized SSE events.

Modules (each documents its own API):

* ``tools`` — the typed async tool registry (`Tool`, `ToolRegistry`, `ToolOutcome`).
* ``demo_tools`` — the real demo tools (`build_demo_registry`).
* ``events`` — pure SSE framing of the agent events (`encode_event`, `parse_event_id`).
* ``store`` — the resume store with live tail and a cross-replica cancel signal.

Nothing here does work at import time; the app's lifespan builds the registry and the store.
"""

from __future__ import annotations

__all__: tuple[str, ...] = ()
