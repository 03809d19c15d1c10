"""Issue 1: a client that leaves closes the upstream call at once, and is counted as such."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.reliability.support import (
    RawStream,
    completed_lines,
    deltas_in,
    metric,
    scenario_body,
    scrape,
    sim_stats,
    wait_for,
)

if TYPE_CHECKING:
    from tests.support.servers import ServerProcess

UPSTREAM_CLOSE_BUDGET = 0.100


def _cancelled_entry(sim: ServerProcess, request_id: str) -> dict:
    def find() -> dict | None:
        return next((c for c in sim_stats(sim)["cancelled"] if c["request_id"] == request_id), None)

    return wait_for(find, timeout=5)


def _line_for(gateway: ServerProcess, request_id: str) -> dict:
    def find() -> dict | None:
        return next((r for r in completed_lines(gateway) if r.get("request_id") == request_id), None)

    return wait_for(find, timeout=5)


@pytest.mark.parametrize(
    ("phase", "scenario", "deltas_before_close"),
    [("before_first_token", "slow_first_token", 0), ("mid_stream", "text", 6)],
)
def test_client_leaves_upstream_closed_within_100ms(
    sim: ServerProcess, gateway: ServerProcess, phase: str, scenario: str, deltas_before_close: int
) -> None:
    """Client leaves before the first token / mid-stream: upstream closed <100 ms, outcome, phase."""
    before = scrape(gateway.url)
    client = RawStream(gateway.url, "/v1/messages", scenario_body(scenario))
    assert client.read_head() == 200
    request_id = client.headers["request-id"]
    client.read_until(lambda b: b"event: message_start" in b and deltas_in(b) >= deltas_before_close)
    assert deltas_in(client.body) >= deltas_before_close
    closed_at = client.close()

    entry = _cancelled_entry(sim, request_id)
    assert entry["time"] - closed_at < UPSTREAM_CLOSE_BUDGET, (
        f"upstream closed {1000 * (entry['time'] - closed_at):.0f} ms after the client left"
    )

    line = _line_for(gateway, request_id)
    assert line["outcome"] == "client_disconnect"
    assert line["disconnect_phase"] == phase
    assert line["input_tokens"] > 0, "usage from message_start must be counted"
    if phase == "mid_stream":
        assert line["output_tokens"] >= deltas_before_close, "streamed output must be counted"

    after = scrape(gateway.url)
    route = "/v1/messages"
    assert metric(after, "claude_gateway_client_disconnects_total", route=route, phase=phase) == (
        metric(before, "claude_gateway_client_disconnects_total", route=route, phase=phase) + 1
    )
    assert metric(after, "claude_gateway_requests_total", route=route, outcome="client_disconnect") == (
        metric(before, "claude_gateway_requests_total", route=route, outcome="client_disconnect") + 1
    )
    in_before = metric(before, "claude_gateway_tokens_total", type="input")
    assert metric(after, "claude_gateway_tokens_total", type="input") >= in_before + line["input_tokens"]
    out_before = metric(before, "claude_gateway_tokens_total", type="output")
    assert metric(after, "claude_gateway_tokens_total", type="output") >= out_before + line["output_tokens"]
    wait_for(lambda: metric(scrape(gateway.url), "claude_gateway_active_streams", route=route) == 0)


def test_cancelled_stream_releases_its_concurrency_slot(sim: ServerProcess, gateway: ServerProcess) -> None:
    """After clients leave, the active-streams gauge is back to zero and no upstream stream is live."""
    clients = [RawStream(gateway.url, "/v1/messages", scenario_body("slow_first_token")) for _ in range(3)]
    for client in clients:
        client.read_until(lambda b: b"message_start" in b)
    assert metric(scrape(gateway.url), "claude_gateway_active_streams", route="/v1/messages") == 3
    for client in clients:
        client.close()
    wait_for(lambda: metric(scrape(gateway.url), "claude_gateway_active_streams", route="/v1/messages") == 0)
    wait_for(lambda: sim_stats(sim)["active_streams"] == 0)
