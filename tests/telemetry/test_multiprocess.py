"""`serve --workers 2`: metrics aggregate across workers (prometheus_client multiprocess mode)."""

from __future__ import annotations

import time

import httpx

from gateway.telemetry.stream import FLUSH_SECONDS
from tests.support.servers import run_gateway


def sample(text: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


def test_two_workers_report_one_total() -> None:
    """Requests served by either worker all appear in every scrape, whichever worker answers it."""
    with run_gateway({"GATEWAY_SIM_FAST": "true"}, workers=2) as gw:
        deadline = time.monotonic() + 20  # /healthz answers as soon as the first worker is up
        while sum('"gateway.started"' in line for line in gw.log_lines()) < 2:
            assert time.monotonic() < deadline, "the second worker did not start"
            time.sleep(0.1)
        body = {"model": "claude-haiku-5-5", "max_tokens": 32, "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(8):  # a new connection each time, so both workers take some
            assert httpx.post(f"{gw.url}/v1/messages", json=body, timeout=30).status_code == 200
        # A scrape records its own worker's pending streams; the other worker's are recorded
        # by their batch timer, FLUSH_SECONDS after they ended.
        time.sleep(FLUSH_SECONDS * 5)
        scrapes = [httpx.get(f"{gw.url}/metrics").text for _ in range(4)]
    for text in scrapes:
        assert sample(text, 'claude_gateway_requests_total{outcome="ok",route="/v1/messages"}') == 8
        assert sample(text, 'claude_gateway_time_to_first_token_seconds_count{') == 8
        assert sample(text, "claude_gateway_active_streams{") == 0
