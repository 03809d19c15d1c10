"""Fixtures shared by the whole suite."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.support.servers import run_redis

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server for the session; tests use distinct key prefixes or flush it."""
    with run_redis() as url:
        yield url
