"""``GatewayMetrics``: remembered children and values, moved natively, expose what the library's own calls do."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest

from gateway.telemetry import metrics as metrics_module
from gateway.telemetry import series
from gateway.telemetry.metrics import GatewayMetrics


def fresh() -> tuple[GatewayMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return GatewayMetrics(registry, version="test", max_streams=10), registry


def test_child_is_the_labelled_series() -> None:
    """Each label tuple gets its own series, and the same child on every call."""
    m, registry = fresh()
    m.child(m.requests, "/v1/messages", "ok").inc()
    m.child(m.requests, "/v1/messages", "ok").inc()
    m.child(m.requests, "/v1/messages", "timeout").inc()
    m.child(m.duration, "/v1/messages", "other", "ok").observe(0.3)
    assert m.child(m.requests, "/v1/messages", "ok") is m.requests.labels("/v1/messages", "ok")
    sample = registry.get_sample_value
    assert sample("claude_gateway_requests_total", {"route": "/v1/messages", "outcome": "ok"}) == 2
    assert sample("claude_gateway_requests_total", {"route": "/v1/messages", "outcome": "timeout"}) == 1
    labels = {"route": "/v1/messages", "model": "other", "outcome": "ok"}
    assert sample("claude_gateway_stream_duration_seconds_count", labels) == 1
    assert sample("claude_gateway_stream_duration_seconds_bucket", {**labels, "le": "0.5"}) == 1


def test_child_beyond_the_cache_bound_still_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``MAX_CACHED_CHILDREN`` label tuples, children are looked up each time, not dropped."""
    monkeypatch.setattr(metrics_module, "MAX_CACHED_CHILDREN", 2)
    m, registry = fresh()
    for _ in range(3):
        for reason in ("a", "b", "c", "d"):
            m.child(m.upstream_retries, reason).inc()
    for reason in ("a", "b", "c", "d"):
        assert registry.get_sample_value("claude_gateway_upstream_retries_total", {"reason": reason}) == 3


def test_observe_exposes_what_the_librarys_observe_does() -> None:
    """Counts, sums, bucket edges, +Inf and exemplars: the same OpenMetrics text as ``Histogram.observe``."""
    values = [0.0, 1e-9, 0.05, 0.0500001, 0.1, 2.5, 300, 301, 1e9, -1.0]
    texts = []
    for use_ours in (False, True):
        m, registry = fresh()
        for i, value in enumerate(values):
            exemplar = {"trace_id": f"{i:032x}"} if i % 2 else None
            if use_ours:
                m.observe(m.ttft, "/v1/messages", "other", amount=value, exemplar=exemplar)
                m.observe(m.overhead, "/v1/messages", amount=value, exemplar=exemplar)
            else:
                m.ttft.labels("/v1/messages", "other").observe(value, exemplar)
                m.overhead.labels("/v1/messages").observe(value, exemplar)
        lines = [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]
        texts.append(re.sub(r"(# \{trace_id=\"[0-9a-f]+\"\} \S+) \S+", r"\1 T", "\n".join(lines)))  # exemplar times
    assert texts[1] == texts[0]
    assert 'trace_id="00000000000000000000000000000009"' in texts[1]
    assert 'le="+Inf",model="other",route="/v1/messages"} 10.0' in texts[1]


def test_the_librarys_own_calls_still_move_a_native_series(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a child's values are cells, its own ``inc``, ``set`` and ``observe`` (and the values
    it held before) still read as they would have; past the cache bound too."""
    monkeypatch.setattr(metrics_module, "MAX_CACHED_CHILDREN", 1)
    texts = []
    for use_ours in (False, True):
        m, registry = fresh()
        m.requests.labels("/v1/messages", "ok").inc(2)
        m.duration.labels("/v1/messages", "other", "ok").observe(0.25, {"trace_id": "a" * 32})
        for _ in range(2):
            if use_ours:
                m.add(m.requests, "/v1/messages", "ok")
                m.observe(m.duration, "/v1/messages", "other", "ok", amount=7.0)
                m.add(m.active_streams, "/v1/messages")
            m.requests.labels("/v1/messages", "ok").inc()
            m.active_streams.labels("/v1/messages").set(5)
            m.duration.labels("/v1/messages", "other", "ok").observe(0.75)
            if not use_ours:
                m.requests.labels("/v1/messages", "ok").inc()
                m.duration.labels("/v1/messages", "other", "ok").observe(7.0)
        lines = [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]
        texts.append(re.sub(r"(# \{trace_id=\"[0-9a-f]+\"\} \S+) \S+", r"\1 T", "\n".join(lines)))  # exemplar times
    assert texts[1] == texts[0]
    child = m.duration.labels("/v1/messages", "other", "ok")
    assert isinstance(child._sum, series.Cell)
    assert all(isinstance(bucket, series.Cell) for bucket in child._buckets)
    assert 'claude_gateway_requests_total{outcome="ok",route="/v1/messages"} 6.0' in texts[1]
    assert 'claude_gateway_active_streams{route="/v1/messages"} 5.0' in texts[1]
    assert 'trace_id="' + "a" * 32 in texts[1]


def test_add_exposes_what_the_librarys_inc_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counters and a gauge moved by ``add`` read as ``inc``/``dec`` leave them, past the cache bound too."""
    monkeypatch.setattr(metrics_module, "MAX_CACHED_CHILDREN", 3)
    texts = []
    for use_ours in (False, True):
        m, registry = fresh()
        for i in range(4):
            for route in ("/v1/messages", "/v1/agent/stream"):
                if use_ours:
                    m.add(m.requests, route, "ok")
                    m.add(m.cost, "other", amount=0.25 * i)
                    m.add(m.active_streams, route)
                    m.add(m.active_streams, route, amount=-1.0 if i % 2 else 0.0)
                else:
                    m.requests.labels(route, "ok").inc()
                    m.cost.labels("other").inc(0.25 * i)
                    m.active_streams.labels(route).inc()
                    m.active_streams.labels(route).dec(1.0 if i % 2 else 0.0)
        texts.append("\n".join(line for line in generate_latest(registry).decode().splitlines() if "_created" not in line))
    assert texts[1] == texts[0]
    assert 'claude_gateway_requests_total{outcome="ok",route="/v1/agent/stream"} 4.0' in texts[1]
    assert 'claude_gateway_active_streams{route="/v1/messages"} 2.0' in texts[1]
