"""What the agent loop sends upstream: thinking per model family, blocks shaped as params."""

from __future__ import annotations

import pytest

from gateway.agent.loop import _param_block
from gateway.agent.routes import thinking_config


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-haiku-4-5-20251001", "claude-opus-4-1",
                                   "claude-opus-4-0", "claude-3-7-sonnet-latest"])
def test_older_models_get_a_thinking_budget(model: str) -> None:
    """Up to the 4.5 family, thinking is `enabled` with a budget below max_tokens."""
    config = thinking_config(model, 8000)
    assert config == {"type": "enabled", "budget_tokens": 4000}


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "claude-opus-4-7", "claude-sonnet-5-5", "claude-opus-5-5",
                                   "claude-fable-5-2", "claude-haiku-5-5", "claude-opus-4-50"])
def test_newer_models_get_adaptive_thinking(model: str) -> None:
    """Newer models reject a budget: they get adaptive thinking with summarized display."""
    assert thinking_config(model, 8000) == {"type": "adaptive", "display": "summarized"}


def test_blocks_go_back_with_param_fields_only() -> None:
    """Response-only fields are dropped; thinking keeps its signature; unknown blocks pass unchanged."""
    assert _param_block({"type": "text", "text": "", "citations": None}) == {"type": "text", "text": ""}
    assert _param_block({"type": "tool_use", "id": "t", "name": "n", "input": {}, "caller": {"type": "direct"}}) == {
        "type": "tool_use", "id": "t", "name": "n", "input": {}}
    assert _param_block({"type": "thinking", "thinking": "", "signature": ""}) == {
        "type": "thinking", "thinking": "", "signature": ""}
    redacted = {"type": "redacted_thinking", "data": "abc"}
    assert _param_block(redacted) == redacted
