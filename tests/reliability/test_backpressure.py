"""Issue 3: a client that stops reading is dropped after GATEWAY_SEND_TIMEOUT, with bounded memory."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING

from tests.reliability.support import (
    ANTHROPIC_SECRET,
    RawStream,
    ScriptedUpstream,
    completed_lines,
    message_body,
    metric,
    rss_bytes,
    scrape,
    sse_event,
    sse_head,
    text_stream,
)
from tests.support.servers import run_gateway

if TYPE_CHECKING:
    from tests.reliability.support import Seen

DELTAS = 200_000
BATCH = 500
RSS_GROWTH_LIMIT = 48 * 1024 * 1024


class _Firehose:
    """An upstream that writes a huge stream as fast as the gateway takes it; notes when it is closed."""

    def __init__(self) -> None:
        self.sent = 0
        self.closed_at: float | None = None

    async def __call__(self, writer: asyncio.StreamWriter, _: Seen) -> None:
        delta = sse_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                  "delta": {"type": "text_delta", "text": " lorem ipsum dolor"}})
        head = text_stream([], stop=False).rsplit(b"event: content_block_stop", 1)[0]
        try:
            writer.write(sse_head() + head)
            for _ in range(DELTAS // BATCH):
                writer.write(delta * BATCH)
                await writer.drain()
                self.sent += BATCH
            writer.write(sse_event("message_stop", {"type": "message_stop"}))
            await writer.drain()
        except (ConnectionError, OSError):
            self.closed_at = time.time()


def test_slow_client_dropped_memory_bounded_upstream_closed() -> None:
    """Client never reads: dropped after ~2 s blocked, slow_client counted, RSS bounded, upstream closed."""
    firehose = _Firehose()
    script = ScriptedUpstream([_warm_reply, firehose])
    with script.running():
        env = {"ANTHROPIC_BASE_URL": script.url, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET,
               "GATEWAY_SEND_TIMEOUT": "2", "GATEWAY_KEEPALIVE_SECONDS": "15"}
        with run_gateway(env) as gateway:
            warmup = RawStream(gateway.url, "/v1/messages", message_body())
            warmup.read_all()
            pid = gateway.proc.pid
            baseline = rss_bytes(pid)
            peak = [baseline]
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_bytes(pid))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                client = RawStream(gateway.url, "/v1/messages", message_body(), rcvbuf=4096)
                assert client.read_head() == 200  # then never read
                start = time.monotonic()
                lines = completed_lines(gateway, 2, timeout=30)
                dropped_after = time.monotonic() - start
            finally:
                stop.set()
                sampler.join()
            line = lines[-1]
            assert line["outcome"] == "client_disconnect"
            assert line["error_type"] == "slow_client"
            assert line["disconnect_phase"] == "mid_stream"
            assert dropped_after < 15
            assert firehose.sent < DELTAS, "the gateway must not read the whole upstream into memory"
            growth = peak[0] - baseline
            assert growth < RSS_GROWTH_LIMIT, f"gateway RSS grew by {growth / 2**20:.1f} MiB"
            text = scrape(gateway.url)
            assert metric(text, "claude_gateway_stream_errors_total", route="/v1/messages",
                          error_type="slow_client") == 1
            assert metric(text, "claude_gateway_client_disconnects_total", route="/v1/messages",
                          phase="mid_stream") == 1
            assert metric(text, "claude_gateway_active_streams", route="/v1/messages") == 0
            deadline = time.monotonic() + 5
            while firehose.closed_at is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert firehose.closed_at is not None, "the upstream connection must be closed"
            # The connection to the slow client is ended: once it reads, it reaches EOF.
            client.read_all(timeout=20)
            assert client.eof or client.ended


async def _warm_reply(writer: asyncio.StreamWriter, _: Seen) -> None:
    writer.write(sse_head() + text_stream(["warm", "up"]))
    await writer.drain()
