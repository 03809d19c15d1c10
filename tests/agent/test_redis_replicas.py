"""Two gateway replicas sharing Redis: a stream started on one is resumed and cancelled on the other."""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from gateway.proxy.sse import SSEDecoder
from tests.support.servers import run_gateway, run_simulator

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.servers import ServerProcess

KEY = "csg_replica_key"


@pytest.fixture(scope="module")
def replicas(redis_url: str) -> Iterator[tuple[ServerProcess, ServerProcess, ServerProcess]]:
    env = {"GATEWAY_REDIS_URL": redis_url, "GATEWAY_API_KEY_SHA256": hashlib.sha256(KEY.encode()).hexdigest(),
           "ANTHROPIC_API_KEY": "sk-test", "GATEWAY_RESUME_GRACE_SECONDS": "30"}
    with run_simulator({"GATEWAY_SIM_TTFT_SECONDS": "0.02"}) as sim, \
            run_gateway({**env, "ANTHROPIC_BASE_URL": sim.url}) as a, \
            run_gateway({**env, "ANTHROPIC_BASE_URL": sim.url}) as b:
        yield sim, a, b


def events(raw: bytes) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e.id, e.event, json.loads(e.data)) for e in SSEDecoder().feed(raw)]


def test_resume_on_another_replica(replicas: tuple[ServerProcess, ServerProcess, ServerProcess]) -> None:
    """Cut on replica A after a few events; replica B replays the rest from Redis, no gap or duplicate."""
    _, a, b = replicas
    got: list[tuple[str, str, dict[str, Any]]] = []
    decoder = SSEDecoder()
    with httpx.stream("POST", f"{a.url}/v1/agent/stream", timeout=60,
                      json={"prompt": "Find orders for Carol", "tools": ["search_database"]},
                      headers={"x-api-key": KEY, "x-simulator-tokens-per-second": "40"}) as resp:
        for chunk in resp.iter_raw():
            got += [(e.id, e.event, json.loads(e.data)) for e in decoder.feed(chunk)]
            if len(got) >= 6:
                break
    stream_id = got[0][2]["stream_id"]
    rest = httpx.get(f"{b.url}/v1/agent/stream/{stream_id}", timeout=60,
                     headers={"x-api-key": KEY, "last-event-id": got[-1][0]})
    assert rest.status_code == 200
    joined = got + events(rest.content)
    assert [i for i, _, _ in joined] == [f"{stream_id}:{n}" for n in range(len(joined))]
    assert joined[-1][1] == "stream_end"
    assert any(e == "tool_result" for _, e, _ in joined)


def test_cancel_on_another_replica(replicas: tuple[ServerProcess, ServerProcess, ServerProcess]) -> None:
    """A cancel sent to replica B stops the loop running on replica A and its upstream call."""
    sim, a, b = replicas
    since = time.time()
    seen: list[tuple[str, str]] = []
    with httpx.stream("POST", f"{a.url}/v1/agent/stream", timeout=60,
                      json={"prompt": "a long story", "tools": []},
                      headers={"x-api-key": KEY, "x-simulator-tokens-per-second": "10",
                               "x-simulator-output-tokens": "400"}) as resp:
        decoder = SSEDecoder()
        for chunk in resp.iter_raw():
            for e in decoder.feed(chunk):
                seen.append((e.event, e.data))
                if e.event == "token" and sum(1 for n, _ in seen if n == "token") == 2:
                    stream_id = json.loads(seen[0][1])["stream_id"]
                    cancel = httpx.post(f"{b.url}/v1/agent/stream/{stream_id}/cancel",
                                        headers={"x-api-key": KEY}, timeout=10)
                    assert cancel.json()["cancelled"] is True
    assert [n for n, _ in seen][-2:] == ["error", "stream_end"]
    assert json.loads(seen[-2][1])["type"] == "cancelled"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        cancelled = [c for c in httpx.get(f"{sim.url}/_simulator/stats").json()["cancelled"] if c["time"] >= since]
        if cancelled:
            break
        time.sleep(0.1)
    assert cancelled
