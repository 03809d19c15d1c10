"""``GatewayApp``: what it adds around Litestar, seen on a real server."""

from __future__ import annotations

import gc

import httpx

from tests.support.inproc import serve_in_thread

BODY = {
    "model": "claude-haiku-5-5",
    "max_tokens": 16,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


def test_a_finished_request_leaves_no_reference_cycle() -> None:
    """The raw ``send`` kept in the scope leaves it at the request's end, so uvicorn's cycle (and
    the scope, its event, its body) is freed then, not by a pass of the garbage collector."""
    with serve_in_thread() as gw, httpx.Client(base_url=gw.url, timeout=30) as client:
        gc.collect()  # what earlier tests left
        for path in ("/v1/messages", "/v1/messages", "/healthz"):
            if path == "/healthz":
                assert client.get(path).status_code == 200
            else:
                assert client.post(path, json=BODY).status_code == 200
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            left = sorted({type(o).__name__ for o in gc.garbage} & {"RequestResponseCycle", "StreamRelay"})
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert left == []
