"""Fixtures shared by the whole suite."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis

from tests.support.servers import run_redis

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server for the session; tests use distinct key prefixes or flush it."""
    with run_redis() as url:
        yield url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """An asyncio client of the session's Redis, closed after the test."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()
