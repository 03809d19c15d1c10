"""The client's ``http.disconnect``, listened for while a stream waits on its upstream.

A stream must learn that its client has gone even while nothing is written, so that it closes
the upstream at once. ``receive_disconnect`` is the plain way, a coroutine that calls
``receive()`` until the answer is ``http.disconnect``, run as a task. ``listen`` runs it so,
except under uvicorn's httptools protocol: there ``DisconnectWatch`` steps the same ``receive()``
from its wait's callback, as a task would step it, without a task. Creating, starting and
ending a task was 27 k instructions a stream, 2 % of a paced one's (the watch, 16 k). It is kept to uvicorn's
cycle, whose ``receive`` awaits one ``asyncio.Event`` and asks nothing of the current task;
under other servers and test clients ``receive`` may enter anyio's cancel scopes, which need
one.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from gateway.proxy.server_write import uvicorn_cycle

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from litestar.types import Receive

__all__ = ("DisconnectWatch", "Listener", "listen", "receive_disconnect")


class Listener(Protocol):
    """What ``listen`` returns: ``cancel()`` stops listening (idempotent)."""

    def cancel(self) -> object:
        """Stop listening; ``gone`` is not called after this."""
        ...


async def receive_disconnect(receive: Receive) -> None:
    """Return when the client has gone (ASGI ``http.disconnect``)."""
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            return


def listen(receive: Receive, gone: Callable[[], None]) -> Listener:
    """Call ``gone`` once ``receive`` answers ``http.disconnect`` or fails.

    Args:
        receive: The server's own ``receive`` (no middleware's replay in between).
        gone: Called once unless the listener was cancelled first; under uvicorn, before this
            returns when the client has already gone.
    """
    if uvicorn_cycle(receive) is not None:
        return DisconnectWatch(receive, gone)
    task = asyncio.get_running_loop().create_task(receive_disconnect(receive))
    task.add_done_callback(partial(_task_over, gone))
    return task


def _task_over(gone: Callable[[], None], task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a receive() that failed is a client gone too
        gone()


class DisconnectWatch:
    """``receive_disconnect`` without a task: its ``receive()`` stepped from its wait's callback.

    Each step is what a task's step is: send ``None`` into the coroutine; a future it yields
    is waited on by a callback, a bare yield gives the loop one turn. An answer other than
    ``http.disconnect`` (a body chunk) starts the next ``receive()``. ``cancel`` closes the
    coroutine where it waits, as a task's cancellation would end it: uvicorn's ``Event.wait``
    takes its future off the event's waiters on the way out.
    """

    __slots__ = ("_gone", "_receive", "_step")

    def __init__(self, receive: Receive, gone: Callable[[], None]) -> None:
        self._receive = receive
        self._gone = gone
        self._step: Generator[Any, None, Any] | None = None
        self._next()

    def cancel(self) -> None:
        """Stop listening (idempotent)."""
        step, self._step = self._step, None
        if step is not None:
            step.close()

    def _next(self) -> None:
        self._step = self._receive().__await__()
        self._advance(None)

    def _advance(self, _: object) -> None:
        step = self._step
        if step is None:  # cancelled while its wait was pending
            return
        try:
            blocker = step.send(None)
        except StopIteration as stop:
            self._step = None
            if stop.value["type"] == "http.disconnect":
                self._gone()
            else:
                self._next()
            return
        except asyncio.CancelledError:  # its wait was cancelled: as a task cancelled, no call
            self._step = None
            return
        except Exception:  # noqa: BLE001 - a receive() that failed is a client gone too
            self._step = None
            self._gone()
            return
        if blocker is None:
            asyncio.get_running_loop().call_soon(self._advance, None)
        else:
            blocker._asyncio_future_blocking = False  # what a task does with a yielded future
            blocker.add_done_callback(self._advance)
