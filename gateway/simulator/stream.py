"""Render a ``Plan`` as SSE bytes and send them with realistic pacing and faults.

The whole stream is encoded up front into a list of ready ``bytes``; the send loop only
sleeps and calls ``send``. A second task listens for ``http.disconnect`` and cancels the
sender, so an early client close stops generation at once and is recorded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.simulator import wire

if TYPE_CHECKING:
    from gateway.simulator.asgi import Receive, Send
    from gateway.simulator.config import Pacing, SimulatorConfig
    from gateway.simulator.plan import Plan
    from gateway.simulator.record import Record

__all__ = ("DisconnectWatch", "SimulatedResetError", "render_events", "run_stream")

# Fast mode yields to the loop this often so disconnects and other streams are served.
_FAST_YIELD_EVERY = 32


class SimulatedResetError(Exception):
    """Raised inside the app on purpose: uvicorn then aborts the connection mid-body."""


@dataclass(slots=True)
class _Rendered:
    events: list[bytes]
    is_delta: list[bool]
    """True for content deltas, the events that are paced and counted towards faults."""


def render_events(plan: Plan) -> _Rendered:
    """Encode every event of ``plan`` in wire order."""
    start_usage = dict(plan.usage, output_tokens=1)
    message: dict[str, Any] = {
        "id": plan.message_id, "type": "message", "role": "assistant", "model": plan.model,
        "content": [], "stop_reason": None, "stop_sequence": None, "stop_details": None,
        "usage": start_usage,
    }
    events = [wire.event("message_start", {"type": "message_start", "message": message}),
              wire.PING]
    is_delta = [False, False]
    for index, block in enumerate(plan.blocks):
        if block.kind == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            delta_head = b'{"type":"text_delta","text":'
        elif block.kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            delta_head = b'{"type":"thinking_delta","thinking":'
        else:
            start = {**block.final, "input": {}, "caller": {"type": "direct"}}
            delta_head = b'{"type":"input_json_delta","partial_json":'
        events.append(wire.event("content_block_start", {
            "type": "content_block_start", "index": index, "content_block": start}))
        is_delta.append(False)
        prefix = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
                  + str(index).encode() + b',"delta":')
        for piece in block.pieces:
            events.append(wire.delta_event(prefix, delta_head + wire.json_bytes(piece) + b"}"))
            is_delta.append(True)
        if block.kind == "thinking":
            signature = wire.json_bytes(block.final["signature"])
            events.append(wire.delta_event(
                prefix, b'{"type":"signature_delta","signature":' + signature + b"}"))
            is_delta.append(True)
        events.append(wire.block_stop(index))
        is_delta.append(False)
    usage = plan.usage
    events.append(wire.event("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": plan.stop_reason, "stop_sequence": None, "stop_details": None},
        "usage": {
            "input_tokens": usage["input_tokens"],
            "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
            "cache_read_input_tokens": usage["cache_read_input_tokens"],
            "output_tokens": usage["output_tokens"],
        },
    }))
    events.append(wire.MESSAGE_STOP)
    is_delta.extend((False, False))
    return _Rendered(events, is_delta)


class DisconnectWatch:
    """Cancel the current task when the client disconnects before ``done`` is set."""

    __slots__ = ("_task", "_watcher", "client_gone", "done")

    def __init__(self, receive: Receive) -> None:
        self.done = False
        self.client_gone = False
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._watcher = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if not self.done:
            self.client_gone = True
            self._task.cancel()

    def absorb(self) -> bool:
        """Call in ``except CancelledError``: True if the cancel was our client leaving."""
        if self.client_gone:
            self._task.uncancel()
            return True
        return False

    def close(self) -> None:
        """Stop listening (the reply is over)."""
        self.done = True
        self._watcher.cancel()


async def run_stream(
    send: Send, receive: Receive, *, plan: Plan, pacing: Pacing, config: SimulatorConfig,
    fault: str | None, headers: list[tuple[bytes, bytes]], record: Record, entry: dict[str, Any],
) -> None:
    """Send the SSE reply for ``plan``; record completion or an early client close."""
    rendered = render_events(plan)
    events, is_delta = rendered.events, rendered.is_delta
    fault_at = max(1, min(config.fault_after_deltas, sum(is_delta))) if fault else -1
    watch = DisconnectWatch(receive)
    loop = asyncio.get_running_loop()
    sent = deltas = 0
    outcome = "ok"
    record.active_streams += 1
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        started = last_ping = loop.time()
        for body, paced in zip(events, is_delta, strict=True):
            if paced:
                if deltas == fault_at:
                    outcome = await _strike(send, fault or "", config, entry)
                    break
                if not pacing.fast or pacing.ttft:
                    due = started + pacing.ttft + deltas * pacing.interval
                    last_ping = await _sleep_until(send, due, last_ping, config, loop)
                deltas += 1
            if pacing.fast and sent % _FAST_YIELD_EVERY == _FAST_YIELD_EVERY - 1:
                await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": body, "more_body": True})
            sent += 1
        watch.done = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        record.finished(entry, sent, outcome)
    except asyncio.CancelledError:
        if not watch.absorb():
            raise
        record.client_closed(entry, sent)
    except SimulatedResetError:
        record.finished(entry, sent, "reset")
        raise
    finally:
        record.active_streams -= 1
        watch.close()


async def _strike(send: Send, fault: str, config: SimulatorConfig, entry: dict[str, Any]) -> str:
    """Run a mid-stream fault; returns the outcome once the stream may end cleanly."""
    if fault == "overloaded":
        body = wire.error_event("overloaded_error", "Overloaded", entry["request_id"])
        await send({"type": "http.response.body", "body": body, "more_body": True})
    elif fault == "reset":
        raise SimulatedResetError(f"simulated connection reset ({entry['request_id']})")
    elif fault == "stall":
        await asyncio.sleep(config.stall_seconds)
    return fault


async def _sleep_until(send: Send, due: float, last_ping: float, config: SimulatorConfig,
                       loop: asyncio.AbstractEventLoop) -> float:
    """Sleep until ``due``, sending a ``ping`` whenever the ping interval passes meanwhile."""
    interval = config.ping_interval_seconds
    while True:
        now = loop.time()
        if now - last_ping >= interval:
            await send({"type": "http.response.body", "body": wire.PING, "more_body": True})
            last_ping = now
        wait = min(due, last_ping + interval) - now
        if due <= now:
            return last_ping
        await asyncio.sleep(wait)
