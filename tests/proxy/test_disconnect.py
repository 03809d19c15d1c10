"""``disconnect.listen``: ``gone`` once the client has gone, with or without a task."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from gateway.proxy.disconnect import DisconnectWatch, listen


class _Transport:
    def is_closing(self) -> bool:
        return False


class _Flow:
    def __init__(self) -> None:
        self.resumed = 0

    def resume_reading(self) -> None:
        self.resumed += 1


def cycle() -> Any:
    """A real uvicorn cycle, its request body already read, as the relay finds it."""
    logger = logging.getLogger("test")
    made = RequestResponseCycle(
        {"type": "http"},  # type: ignore[arg-type]
        _Transport(),  # type: ignore[arg-type]
        _Flow(),  # type: ignore[arg-type]
        logger,
        logger,
        False,  # access_log
        [],
        asyncio.Event(),
        False,  # expect_100_continue
        True,  # keep_alive
        lambda: None,
    )
    made.more_body = False
    return made


async def turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_uvicorn_receive_is_watched_without_a_task() -> None:
    """A body message starts the next receive(); http.disconnect calls gone, once."""
    calls: list[str] = []
    server = cycle()
    listener = listen(server.receive, lambda: calls.append("gone"))
    assert isinstance(listener, DisconnectWatch)
    await turns()
    assert calls == []
    assert len(server.message_event._waiters) == 1  # waiting, as a task's receive() would
    server.body = bytearray(b"late")  # a message that is not a disconnect
    server.message_event.set()
    await turns()
    assert calls == []
    assert len(server.message_event._waiters) == 1  # the next receive() waits
    server.disconnected = True
    server.message_event.set()
    await turns()
    assert calls == ["gone"]
    listener.cancel()  # after the end: nothing
    server.message_event.set()
    await turns()
    assert calls == ["gone"]
    assert server.flow.resumed == 2


async def test_a_cancelled_watch_stops_waiting_and_never_calls() -> None:
    """cancel() closes the waiting receive(): its future leaves the event's waiters."""
    calls: list[str] = []
    server = cycle()
    listener = listen(server.receive, lambda: calls.append("gone"))
    await turns()
    listener.cancel()
    listener.cancel()
    assert len(server.message_event._waiters) == 0
    server.disconnected = True
    server.message_event.set()
    await turns()
    assert calls == []


async def test_a_response_complete_reads_as_gone() -> None:
    """As uvicorn answers after the last message: the listener ends by itself."""
    calls: list[str] = []
    server = cycle()
    listen(server.receive, lambda: calls.append("gone"))
    server.response_complete = True
    server.message_event.set()
    await turns()
    assert calls == ["gone"]


async def test_a_failing_or_yielding_receive() -> None:
    """A receive() that fails is a client gone; a bare yield (sleep(0)) is stepped past."""
    calls: list[str] = []
    steps: list[str] = []

    async def failing() -> dict[str, Any]:
        await asyncio.sleep(0)
        steps.append("failing")
        raise ConnectionResetError

    DisconnectWatch(failing, lambda: calls.append("failed"))  # type: ignore[arg-type]
    await turns()
    assert (steps, calls) == (["failing"], ["failed"])


async def test_another_servers_receive_gets_a_task() -> None:
    """Not uvicorn's cycle: a task runs receive_disconnect; cancelling it calls nothing."""
    calls: list[str] = []
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    listener = listen(queue.get, lambda: calls.append("gone"))  # type: ignore[arg-type]
    assert isinstance(listener, asyncio.Task)
    await queue.put({"type": "http.request", "body": b"", "more_body": False})
    await turns()
    assert calls == []
    await queue.put({"type": "http.disconnect"})
    await turns()
    assert calls == ["gone"]
    other = listen(queue.get, lambda: calls.append("other"))  # type: ignore[arg-type]
    await turns()
    other.cancel()
    await turns()
    assert calls == ["gone"]
