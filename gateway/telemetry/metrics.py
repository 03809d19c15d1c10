"""Every Prometheus family of the product contract, on a registry the app factory owns.

Names, labels and buckets are fixed by ``PRODUCT.md``: dashboards and alerts are written against
them. Labels are bounded: ``model`` is normalized to a known id or ``other`` before it gets here.

With several uvicorn workers the families live in prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by ``claude-gateway serve --workers N`` before the workers
start) and ``/metrics`` aggregates the workers' files; exemplars exist only in single-process
mode, which the client library does not support across processes.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.telemetry.series import Cell, HistogramSeries, native_value

if TYPE_CHECKING:
    from collections.abc import Sequence

    from prometheus_client.metrics import MetricWrapperBase

__all__ = ("GatewayMetrics", "metrics_registry_for_scrape", "multiprocess_enabled")

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300)
OVERHEAD_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)
TOOL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)

MAX_TOOL_LABELS = 200
MAX_CACHED_CHILDREN = 4096
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

ROUTE_MESSAGES = "/v1/messages"
ROUTE_AGENT = "/v1/agent/stream"

OUTCOMES = (
    "ok",
    "client_disconnect",
    "rate_limited",
    "overloaded",
    "upstream_error",
    "timeout",
    "bad_request",
    "unauthorized",
    "gateway_error",
)


_Family = TypeVar("_Family", bound="MetricWrapperBase")


def multiprocess_enabled() -> bool:
    """True when prometheus_client was started in multiprocess mode."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def metrics_registry_for_scrape(own: CollectorRegistry) -> CollectorRegistry:
    """The registry ``/metrics`` should render: the workers' aggregate in multiprocess mode."""
    if not multiprocess_enabled():
        return own
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


class GatewayMetrics:
    """The gateway's metric families, registered on ``registry``.

    Args:
        registry: Where to register; tests pass a fresh one each.
        version: Package version for ``claude_gateway_build_info``.
        max_streams: The configured stream cap, exported so saturation alerts can divide by it.
    """

    def __init__(self, registry: CollectorRegistry, *, version: str, max_streams: int) -> None:
        ns = "claude_gateway"
        reg = registry
        self.requests = Counter(
            "requests",
            "Requests by route and outcome.",
            ["route", "outcome"],
            namespace=ns,
            registry=reg,
        )
        self.active_streams = Gauge(
            "active_streams",
            "Streams open right now.",
            ["route"],
            namespace=ns,
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.ttft = Histogram(
            "time_to_first_token_seconds",
            "Request received to first content delta written to the client.",
            ["route", "model"],
            namespace=ns,
            registry=reg,
            buckets=TTFT_BUCKETS,
        )
        self.upstream_ttft = Histogram(
            "upstream_time_to_first_token_seconds",
            "Upstream request sent to first content delta received.",
            ["model"],
            namespace=ns,
            registry=reg,
            buckets=TTFT_BUCKETS,
        )
        self.overhead = Histogram(
            "overhead_seconds",
            "Time the gateway itself adds before the first token.",
            ["route"],
            namespace=ns,
            registry=reg,
            buckets=OVERHEAD_BUCKETS,
        )
        self.tpot = Histogram(
            "time_per_output_token_seconds",
            "Mean time per output token after the first.",
            ["model"],
            namespace=ns,
            registry=reg,
            buckets=TPOT_BUCKETS,
        )
        self.duration = Histogram(
            "stream_duration_seconds",
            "Whole stream, request received to last byte.",
            ["route", "model", "outcome"],
            namespace=ns,
            registry=reg,
            buckets=DURATION_BUCKETS,
        )
        self.tokens = Counter(
            "tokens",
            "Tokens by model and type.",
            ["model", "type"],
            namespace=ns,
            registry=reg,
        )
        self.cost = Counter(
            "cost_usd",
            "Estimated cost in USD from the price table.",
            ["model"],
            namespace=ns,
            registry=reg,
        )
        self.tool_calls = Counter(
            "tool_calls",
            "Tool calls by tool and phase.",
            ["tool", "phase"],
            namespace=ns,
            registry=reg,
        )
        self.tool_duration = Histogram(
            "tool_duration_seconds",
            "Tool latency: generate, client or server phase.",
            ["tool", "phase"],
            namespace=ns,
            registry=reg,
            buckets=TOOL_BUCKETS,
        )
        self.stream_errors = Counter(
            "stream_errors",
            "Errors during streams.",
            ["route", "error_type"],
            namespace=ns,
            registry=reg,
        )
        self.upstream_responses = Counter(
            "upstream_responses",
            "Upstream replies by HTTP status.",
            ["status_code"],
            namespace=ns,
            registry=reg,
        )
        self.upstream_retries = Counter(
            "upstream_retries",
            "Upstream retries before the first byte.",
            ["reason"],
            namespace=ns,
            registry=reg,
        )
        self.client_disconnects = Counter(
            "client_disconnects",
            "Clients that left before their stream ended.",
            ["route", "phase"],
            namespace=ns,
            registry=reg,
        )
        self.rejected = Counter(
            "rejected",
            "Requests refused before any upstream call.",
            ["reason"],
            namespace=ns,
            registry=reg,
        )
        self.telemetry_errors = Counter(
            "telemetry_errors",
            "Exceptions caught inside telemetry (never fail a stream).",
            ["component"],
            namespace=ns,
            registry=reg,
        )
        self.build_info = Gauge(
            "build_info",
            "Gateway build.",
            ["version"],
            namespace=ns,
            registry=reg,
            multiprocess_mode="max",
        )
        self.max_streams = Gauge(
            "max_streams",
            "Configured cap on concurrent streams.",
            namespace=ns,
            registry=reg,
            multiprocess_mode="max",
        )
        # Read once: the variable is set before the workers start, and multiprocess mode has no exemplars.
        self._native = self.exemplars = not multiprocess_enabled()
        self._tool_labels: set[str] = set()
        # Keyed by (family, label values).
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._values: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._series: dict[tuple[Any, tuple[str, ...]], HistogramSeries] = {}
        self.build_info.labels(version).set(1)
        self.max_streams.set(max_streams)
        self._prime()

    def _prime(self) -> None:
        # Series that exist from the start make rate() and absent() alerts behave on a new pod.
        for route in (ROUTE_MESSAGES, ROUTE_AGENT):
            self.active_streams.labels(route)
            self.requests.labels(route, "ok")
            for phase in ("before_first_token", "mid_stream"):
                self.client_disconnects.labels(route, phase)
        for reason in ("auth", "rate_limit", "concurrency", "body_size", "validation"):
            self.rejected.labels(reason)

    def child(self, family: _Family, *values: str) -> _Family:
        """``family.labels(*values)``, remembered: ``labels()`` validates and locks on every call.

        The first ``MAX_CACHED_CHILDREN`` label tuples are kept (label values are bounded, so in
        practice all of them); past that, ``labels()`` is called each time.
        """
        key = (family, values)  # a pair: building a flat tuple from the star-args costs more
        found = self._children.get(key)
        if found is None:
            found = family.labels(*values)
            if len(self._children) < MAX_CACHED_CHILDREN:
                self._children[key] = found
        return found

    def add(self, family: Counter | Gauge, *values: str, amount: float = 1.0) -> None:
        """``family.labels(*values).inc(amount)``, in one call instead of five.

        ``Counter.inc`` and ``Gauge.inc`` check on every call that the series is a labelled child
        and, for a counter, that ``amount`` is not negative, before the value's own ``inc``. The
        value of each label tuple is remembered here (as ``child`` remembers children), and
        callers pass amounts that are valid for the family: non-negative for a counter, any for a
        gauge. In one process the value is a ``series.Cell`` put in the child's place and moved
        natively; in multiprocess mode it is the library's file, moved by its ``inc``.
        """
        key = (family, values)
        value = self._values.get(key)
        if value is None:
            child = self.child(family, *values)
            value = child._value
            if self._native:
                value = child._value = native_value(value)
            if len(self._values) < MAX_CACHED_CHILDREN:
                self._values[key] = value
        if self._native:
            cell: Cell = value
            cell.value += amount
        else:
            value.inc(amount)

    def observe(
        self, family: Histogram, *values: str, amount: float, exemplar: dict[str, str] | None = None
    ) -> None:
        """``family.labels(*values).observe(amount, exemplar)``, at a fifth of its cost.

        prometheus_client checks on every call that the series is a child, walks the buckets in
        Python, validates the exemplar and takes two locks; the series remembered here for each
        label tuple (``HistogramSeries``) does the same update natively. ``amount`` is a number,
        not NaN. ``tests/telemetry/test_metrics.py`` compares the exposition with the library's.
        """
        if not self._native:  # multiprocess mode: the library's files, which keep no exemplars
            self.child(family, *values).observe(amount)
            return
        key = (family, values)
        series = self._series.get(key)
        if series is None:
            series = HistogramSeries(self.child(family, *values))
            if len(self._series) < MAX_CACHED_CHILDREN:
                self._series[key] = series
        series.observe(amount, exemplar)

    def record_tool(self, name: str, phase: str, seconds: float | None) -> None:
        """Count a tool call and its duration, under a bounded ``tool`` label.

        Tool names come from clients, so only names shaped like Anthropic's (word characters and -, up to 64)
        and only the first ``MAX_TOOL_LABELS`` of them become label values; the rest are ``other``.
        """
        label = name
        if label not in self._tool_labels:
            if len(self._tool_labels) < MAX_TOOL_LABELS and _TOOL_NAME.match(name):
                self._tool_labels.add(name)
            else:
                label = "other"
        self.child(self.tool_calls, label, phase).inc()
        if seconds is not None:
            self.observe(self.tool_duration, label, phase, amount=max(seconds, 0.0))

    def count_tokens(self, model: str, usage: Sequence[tuple[str, int]]) -> None:
        """Add token counts, skipping zeros so no empty series are created."""
        for kind, value in usage:
            if value:
                self.add(self.tokens, model, kind, amount=value)
