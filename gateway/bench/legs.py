"""One leg of a benchmark: drive a URL with the load generator while sampling the proxy's CPU and RSS.

A leg has two phases on the same processes: *saturation* (fast simulator, streams back to back;
gives throughput and CPU per event when events are batched) and *paced* (the simulator paced at
``--token-rate``, the streams' starts spread over one stream length; gives TTFT, inter-event gaps
and CPU per event at a realistic event rate, where every event is its own read and write).
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.bench.load import LoadState, pacing_headers, run_load, stream_body
from gateway.bench.procs import cpu_seconds, rss_bytes, tree

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("LegConfig", "Sampler", "merge_rounds", "pct", "run_leg", "run_phase")

EVENT_OVERHEAD = 6
"""Events of a text stream besides its deltas: message_start, ping, block start/stop, delta, stop."""


@dataclass(frozen=True, slots=True)
class LegConfig:
    """What every leg of one run does."""

    concurrency: int
    events: int
    token_rate: float
    duration: float
    warmup: float
    headers: dict[str, str]

    @property
    def output_tokens(self) -> int:
        """Text deltas to ask for so a stream has ``events`` events."""
        return max(1, self.events - EVENT_OVERHEAD)


def pct(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1, nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Sampler:
    """Polls RSS (and the process tree) of a proxy while a phase runs."""

    def __init__(self, pid: int | None, interval: float = 0.5) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    def rss_now(self) -> int:
        """RSS of the whole tree right now (0 without a pid)."""
        return rss_bytes(tree(self.pid)) if self.pid is not None else 0

    def cpu_now(self) -> dict[int, float]:
        """CPU seconds of each process of the tree so far (empty without a pid)."""
        return cpu_seconds(tree(self.pid)) if self.pid is not None else {}

    async def _run(self) -> None:
        start = time.perf_counter()
        while True:
            self.samples.append((time.perf_counter() - start, self.rss_now()))
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Start polling in the background."""
        if self.pid is not None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def peak(self) -> int:
        """Largest RSS seen."""
        return max((rss for _, rss in self.samples), default=0)


async def run_phase(
    url: str, cfg: LegConfig, pid: int | None, *, token_rate: float, duration: float,
    on_tick: Callable[[LoadState, float], None] | None, streams_per_worker: int = 0,
    ramp_seconds: float = 0.0, concurrency: int | None = None, record_gaps: bool = True,
    sample_interval: float = 0.5,
) -> tuple[LoadState, dict[str, Any], Sampler]:
    """Run one load phase and return the load state, the proxy figures and the RSS sampler."""
    conc = concurrency or cfg.concurrency
    sampler = Sampler(pid, sample_interval)
    rss_idle = sampler.rss_now()
    cpu0 = sampler.cpu_now()
    sampler.start()
    state = await run_load(
        url, concurrency=conc, duration=duration, body=stream_body(cfg.output_tokens),
        headers={**cfg.headers, **pacing_headers(cfg.output_tokens, token_rate)},
        streams_per_worker=streams_per_worker, ramp_seconds=ramp_seconds,
        record_gaps=record_gaps, on_tick=on_tick,
    )
    await sampler.stop()
    cpu1 = sampler.cpu_now()
    per_process = [cpu1[p] - cpu0.get(p, 0.0) for p in cpu1]
    cpu = sum(per_process)
    # With several workers: each one's share of the CPU, to see whether the load is spread.
    busy = sorted((c for c in per_process if cpu and c >= 0.02 * cpu), reverse=True)
    proxy: dict[str, Any] = {"cpu_seconds": None, "cpu_us_per_event": None, "cpu_util": None,
                             "cpu_split": None,
                             "rss_idle_mb": None, "rss_peak_mb": None, "rss_per_stream_kb": None}
    if pid is not None:
        proxy.update(
            cpu_seconds=round(cpu, 3),
            cpu_us_per_event=round(cpu / state.events * 1e6, 2) if state.events else None,
            cpu_util=round(cpu / state.wall, 3) if state.wall else None,
            rss_idle_mb=round(rss_idle / 2**20, 1),
            rss_peak_mb=round(sampler.peak / 2**20, 1),
            rss_per_stream_kb=round(max(0, sampler.peak - rss_idle) / 1024 / max(1, state.peak_open), 1),
            cpu_split=[round(c / cpu, 3) for c in busy] if len(busy) > 1 else None,
        )
    return state, proxy, sampler


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


async def run_leg(name: str, url: str, pid: int | None, cfg: LegConfig,
                  progress: Callable[[str], Callable[[LoadState, float], None]]) -> dict[str, Any]:
    """Warm up, then the saturation and paced phases; return the leg's figures."""
    if cfg.warmup > 0:
        await run_phase(url, cfg, pid, token_rate=0, duration=cfg.warmup,
                        on_tick=progress(f"{name}: warm-up"), record_gaps=False)
    sat, sat_proxy, _ = await run_phase(url, cfg, pid, token_rate=0, duration=cfg.duration,
                                        on_tick=progress(f"{name}: saturation"), record_gaps=False)
    paced_rate = cfg.token_rate
    # Spread the first requests over one stream's length: equal-length streams started together
    # would stay in lockstep and every TTFT would be measured inside a burst of 50 requests.
    ramp = min(cfg.duration / 2, cfg.events / paced_rate) if paced_rate > 0 else 0.0
    paced, paced_proxy, _ = await run_phase(url, cfg, pid, token_rate=paced_rate,
                                            duration=cfg.duration, on_tick=progress(f"{name}: paced"),
                                            ramp_seconds=ramp)
    return {
        "saturation": {
            "streams": sat.completed, "errors": sat.errors, "error_samples": sat.error_samples,
            "streams_per_s": round(sat.completed / sat.wall, 2) if sat.wall else 0.0,
            "events_per_s": round(sat.events / sat.wall, 1) if sat.wall else 0.0,
            "events_per_stream": round(sat.events / max(1, sat.completed + sat.errors), 2),
            "ttft_p50_ms": _ms(pct(sat.ttfts, 0.5)), "ttft_p99_ms": _ms(pct(sat.ttfts, 0.99)),
            **sat_proxy,
        },
        "paced": {
            "token_rate": paced_rate,
            "streams": paced.completed, "errors": paced.errors, "error_samples": paced.error_samples,
            "events_per_s": round(paced.events / paced.wall, 1) if paced.wall else 0.0,
            "ttft_p50_ms": _ms(pct(paced.ttfts, 0.5)), "ttft_p99_ms": _ms(pct(paced.ttfts, 0.99)),
            "gap_p50_ms": _ms(pct(paced.gaps, 0.5)), "gap_p99_ms": _ms(pct(paced.gaps, 0.99)),
            **paced_proxy,
        },
    }


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One leg's figures over several rounds: each figure's median, counts summed.

    Lists (the workers' CPU split) and missing figures are the first round's; each phase keeps
    every round's CPU per event as ``cpu_us_per_event_rounds``, the spread a reader should see.
    """
    if len(rounds) == 1:
        return rounds[0]
    out: dict[str, Any] = {}
    for phase, first in rounds[0].items():
        merged: dict[str, Any] = {}
        for key, value in first.items():
            values = [r[phase][key] for r in rounds]
            if key in {"streams", "errors"}:
                merged[key] = sum(values)
            elif key == "error_samples":
                merged[key] = [sample for v in values for sample in v][:5]
            elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                merged[key] = round(statistics.median(values), 3)
            else:
                merged[key] = value
        merged["cpu_us_per_event_rounds"] = [r[phase].get("cpu_us_per_event") for r in rounds]
        out[phase] = merged
    return out
