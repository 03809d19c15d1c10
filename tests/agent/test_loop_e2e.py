"""The agent loop against a real gateway and a standalone simulator (so its record is visible)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from gateway.proxy.sse import SSEDecoder
from tests.reliability.support import log_records, wait_for
from tests.support.servers import run_gateway, run_simulator

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.servers import ServerProcess

KEY_A, KEY_B = "csg_agent_key_a", "csg_agent_key_b"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with run_simulator({"GATEWAY_SIM_TTFT_SECONDS": "0.02", "GATEWAY_SIM_TOKENS_PER_SECOND": "400"}) as sim, \
            run_gateway({"ANTHROPIC_BASE_URL": sim.url, "ANTHROPIC_API_KEY": "sk-test",
                         "GATEWAY_API_KEY_SHA256": f"{digest(KEY_A)},{digest(KEY_B)}",
                         "GATEWAY_RESUME_GRACE_SECONDS": "0.5", "GATEWAY_KEEPALIVE_SECONDS": "0.3"}) as gw:
        yield sim, gw


def events_of(raw: bytes) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, event, data) for every event of a raw agent stream."""
    return [(e.id, e.event, json.loads(e.data)) for e in SSEDecoder().feed(raw)]


def start(gw: ServerProcess, payload: dict[str, Any], key: str = KEY_A, **headers: str) -> bytes:
    with httpx.stream("POST", f"{gw.url}/v1/agent/stream", json=payload, timeout=60,
                      headers={"x-api-key": key, **headers}) as resp:
        assert resp.status_code == 200, resp.read()
        return resp.read()


def resume(gw: ServerProcess, stream_id: str, last_id: str | None, key: str = KEY_A) -> httpx.Response:
    headers = {"x-api-key": key, **({"last-event-id": last_id} if last_id else {})}
    return httpx.get(f"{gw.url}/v1/agent/stream/{stream_id}", headers=headers, timeout=60)


def test_tool_called_executed_and_fed_back(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """A tool turn: announced, input streamed, run on the server, result sent back, final answer."""
    _, gw = servers
    evs = events_of(start(gw, {"prompt": "Find orders for customer Alice", "tools": ["search_database"]}))
    names = [e for _, e, _ in evs]
    assert names[0] == "start"
    assert names[-2:] == ["done", "stream_end"]
    assert names.index("tool_start") < names.index("tool_input") < names.index("tool_executing")
    assert names.index("tool_executing") < names.index("tool_result")
    result = next(d for _, e, d in evs if e == "tool_result")
    assert result["tool_name"] == "search_database"
    assert result["is_error"] is False
    assert isinstance(json.loads(result["output"]), list)
    assert result["duration_ms"] >= 0
    turns = [d for _, e, d in evs if e == "turn"]
    assert [t["stop_reason"] for t in turns] == ["tool_use", "end_turn"]
    done = next(d for _, e, d in evs if e == "done")
    assert done["stop_reason"] == "end_turn"
    assert done["usage"]["output_tokens"] > 0
    assert done["usage"]["cost_usd"] > 0
    stream_id = evs[0][2]["stream_id"]
    assert [i for i, _, _ in evs] == [f"{stream_id}:{n}" for n in range(len(evs))]
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'claude_gateway_tool_calls_total{phase="server",tool="search_database"}' in metrics


def test_failing_tool_goes_back_to_claude(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """A tool that fails becomes an is_error tool_result and the stream goes on to an answer."""
    _, gw = servers
    evs = events_of(start(gw, {"prompt": "compute", "tools": ["calculator"]},
                          **{"x-simulator-tool-input": '{"expression": "__import__(\'os\')"}'}))
    result = next(d for _, e, d in evs if e == "tool_result")
    assert result["is_error"] is True
    assert result["error"]
    assert [d["stop_reason"] for _, e, d in evs if e == "turn"] == ["tool_use", "end_turn"]
    assert evs[-1][1] == "stream_end"


def test_max_turns_ends_the_loop(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """With max_turns=1 the loop stops after the first tool round."""
    _, gw = servers
    evs = events_of(start(gw, {"prompt": "Find orders", "max_turns": 1}))
    assert next(d for _, e, d in evs if e == "done")["stop_reason"] == "max_turns"


def test_thinking_and_keepalive(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """Thinking streams as `thinking`; keepalive comments fill a long wait for the first token."""
    _, gw = servers
    raw = start(gw, {"prompt": "Think about tea", "thinking": True, "tools": []},
                **{"x-simulator-ttft-ms": "1200"})
    assert b": keepalive\n\n" in raw
    assert raw.startswith(b"retry: ")
    names = [e for _, e, _ in events_of(raw)]
    assert "thinking" in names
    assert "tool_start" not in names


def test_resume_after_a_cut_at_any_event(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """Cut after k events, resume with Last-Event-ID: the events join with no gap and no duplicate."""
    _, gw = servers
    payload = {"prompt": "Find orders for Bob", "tools": ["search_database"]}
    for cut in (1, 2, 5, 9, 20):
        received: list[tuple[str, str, dict[str, Any]]] = []
        decoder = SSEDecoder()
        with httpx.stream("POST", f"{gw.url}/v1/agent/stream", json=payload, timeout=60,
                          headers={"x-api-key": KEY_A, "x-simulator-tokens-per-second": "60"}) as resp:
            for chunk in resp.iter_raw():
                received += [(e.id, e.event, json.loads(e.data)) for e in decoder.feed(chunk)]
                if len(received) >= cut:
                    break
        stream_id = received[0][2]["stream_id"]
        rest = resume(gw, stream_id, received[-1][0])
        assert rest.status_code == 200
        joined = received + events_of(rest.content)
        full = events_of(resume(gw, stream_id, None).content)
        assert joined == full, f"cut at {cut}"
        assert full[-1][1] == "stream_end"


def test_another_keys_resume_and_cancel_are_refused(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """Only the key that started a stream may resume or cancel it."""
    _, gw = servers
    evs = events_of(start(gw, {"prompt": "hello", "tools": []}))
    stream_id = evs[0][2]["stream_id"]
    assert resume(gw, stream_id, None, key=KEY_B).status_code == 403
    cancel = httpx.post(f"{gw.url}/v1/agent/stream/{stream_id}/cancel", headers={"x-api-key": KEY_B})
    assert cancel.status_code == 403
    assert resume(gw, stream_id, None, key=KEY_A).status_code == 200
    assert resume(gw, "nosuchstream", None).status_code == 404


def _cancelled_upstream(sim: ServerProcess, since: float) -> list[dict[str, Any]]:
    stats = httpx.get(f"{sim.url}/_simulator/stats").json()
    return [c for c in stats["cancelled"] if c["time"] >= since]


def test_grace_period_cancel_reaches_the_simulator(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """With no client attached past the grace period, the loop stops and the upstream call closes."""
    sim, gw = servers
    since = time.time()
    with httpx.stream("POST", f"{gw.url}/v1/agent/stream", timeout=60,
                      json={"prompt": "a long story", "tools": []},
                      headers={"x-api-key": KEY_A, "x-simulator-tokens-per-second": "10",
                               "x-simulator-output-tokens": "400"}) as resp:
        decoder = SSEDecoder()
        for chunk in resp.iter_raw():
            if any(e.event == "token" for e in decoder.feed(chunk)):
                break
    time.sleep(0.3)
    assert not _cancelled_upstream(sim, since), "cancelled before the grace period ran out"
    deadline = time.monotonic() + 5
    while not _cancelled_upstream(sim, since) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _cancelled_upstream(sim, since)


def test_cancel_route_stops_the_upstream_at_once(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """POST .../cancel ends the stream with an error and closes the upstream call."""
    sim, gw = servers
    since = time.time()
    with httpx.stream("POST", f"{gw.url}/v1/agent/stream", timeout=60,
                      json={"prompt": "another long story", "tools": []},
                      headers={"x-api-key": KEY_A, "x-simulator-tokens-per-second": "10",
                               "x-simulator-output-tokens": "400"}) as resp:
        decoder = SSEDecoder()
        seen: list[tuple[str, str]] = []
        for chunk in resp.iter_raw():
            for e in decoder.feed(chunk):
                seen.append((e.event, e.data))
                if e.event == "token" and len([s for s in seen if s[0] == "token"]) == 2:
                    stream_id = json.loads(seen[0][1])["stream_id"]
                    cancel = httpx.post(f"{gw.url}/v1/agent/stream/{stream_id}/cancel",
                                        headers={"x-api-key": KEY_A})
                    assert cancel.json()["cancelled"] is True
    names = [n for n, _ in seen]
    assert names[-2:] == ["error", "stream_end"]
    assert json.loads(seen[-2][1])["type"] == "cancelled"
    deadline = time.monotonic() + 3
    while not _cancelled_upstream(sim, since) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _cancelled_upstream(sim, since)


def test_pause_turn_is_continued(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """A pause_turn sends the assistant content back and the loop goes on to end_turn."""
    _, gw = servers
    evs = events_of(start(gw, {"prompt": "research this", "tools": []},
                          **{"x-simulator-scenario": "pause_turn"}))
    assert [d["stop_reason"] for _, e, d in evs if e == "turn"] == ["pause_turn", "end_turn"]
    assert next(d for _, e, d in evs if e == "done")["stop_reason"] == "end_turn"


def test_a_run_ends_with_one_stream_line(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """The agent stream's ``stream.completed`` line: its route, stream id, usage and trace."""
    _, gw = servers
    evs = events_of(start(gw, {"prompt": "Say hello"}))
    stream_id = evs[0][2]["stream_id"]

    def mine() -> list[dict[str, Any]]:
        return [r for r in log_records(gw, "stream.completed") if r.get("stream_id") == stream_id]

    (line,) = wait_for(mine)
    assert line["route"] == "/v1/agent/stream"
    assert line["outcome"] == "ok"
    assert line["output_tokens"] > 0
    assert line["level"] == "info"
    assert len(line["trace_id"]) == 32
    assert line["timestamp"].endswith("Z")
