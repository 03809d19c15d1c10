"""Placeholder replaced by the agent loop runner."""
from __future__ import annotations
from typing import Any
class AgentRunner:
    def __init__(self, *args: Any) -> None:
        self.default_model = "claude-sonnet-5-5"
    async def start(self) -> None: ...
    async def close(self) -> None: ...
