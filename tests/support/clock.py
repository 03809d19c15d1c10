"""A clock tests move by hand, for TTLs and windows without sleeping."""

from __future__ import annotations

__all__ = ("Clock",)


class Clock:
    """Callable like ``time.monotonic``; set ``now`` to move time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now
