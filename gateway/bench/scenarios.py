"""The three scenarios: ``throughput`` (side by side with nginx), ``open-streams`` and ``soak``.

Placement on a machine with two or more cores: the bench process (load generator) and the
simulator on core 0; the proxy under test (gateway, or the bare nginx reference) alone on core 1.
A multi-worker gateway is left unpinned. The nginx in front of the gateway (repo ``nginx.conf``
leg) runs on core 0 so the gateway keeps core 1 to itself.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from gateway.bench import procs
from gateway.bench.legs import LegConfig, merge_rounds, pct, run_leg, run_phase

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable, Iterator

    from gateway.bench.load import LoadState

    ProgressFactory = Callable[[str], Callable[[LoadState, float], None]]

__all__ = ("Context", "open_streams", "soak", "throughput")



class Context:
    """Processes started for a run, core placement, and the leg configuration."""

    def __init__(self, args: argparse.Namespace, progress: ProgressFactory) -> None:
        self.args = args
        self.progress = progress
        self.notes: list[str] = []
        two = (os.cpu_count() or 1) >= 2 and not args.no_pin
        self.gen_cores: set[int] | None = {0} if two else None
        self.proxy_cores: set[int] | None = {1} if two else None
        self.sim: procs.Proc | None = None
        self.cfg = LegConfig(
            concurrency=args.concurrency, events=args.events, token_rate=args.token_rate,
            duration=args.duration, warmup=args.warmup,
            headers={"x-api-key": args.api_key, "anthropic-version": "2023-06-01",
                     "content-type": "application/json"},
        )

    def start_sim(self) -> str:
        """Start the paced simulator (core 0) and pin this process next to it."""
        self.sim = procs.start_simulator()
        procs.pin([*self.sim.pids(), os.getpid()], self.gen_cores)
        return self.sim.url

    @contextlib.contextmanager
    def proxy(self, kind: str, upstream: str, *, telemetry: bool = True, workers: int = 1,
              max_streams: int = 4000) -> Iterator[procs.Proc]:
        """Start a proxy under test, pinned, and stop it afterwards."""
        if kind == "nginx":
            proc = procs.start_nginx(upstream, repo_conf=False)
            procs.pin(proc.pids(), self.proxy_cores)
        elif kind in {"floor", "relay"}:
            proc = procs.start_python_leg(kind, upstream)
            procs.pin(proc.pids(), self.proxy_cores)
        else:
            proc = procs.start_gateway(upstream, telemetry=telemetry, workers=workers,
                                       max_streams=max_streams)
            procs.pin(proc.pids(), self.proxy_cores if workers == 1 else None)
        try:
            yield proc
        finally:
            proc.stop()

    def close(self) -> None:
        """Stop the simulator."""
        if self.sim is not None:
            self.sim.stop()


async def throughput(ctx: Context) -> dict[str, Any]:
    """Direct, nginx, gateway (telemetry on/off), gateway behind nginx.conf, gateway with N workers."""
    args, cfg = ctx.args, ctx.cfg
    results: dict[str, Any] = {}
    if args.target:
        pid = args.target_pid
        results["target"] = await run_leg("target", args.target + "/v1/messages", pid, cfg, ctx.progress)
        if pid is None:
            ctx.notes.append("no --target-pid: CPU and RSS figures of the target are not measured")
        return results
    sim = ctx.start_sim()
    url = "/v1/messages"
    results.update(await _compared_legs(ctx, sim))
    if procs.nginx_binary() is not None and procs.repo_nginx_conf() is not None:
        with ctx.proxy("gateway", sim, telemetry=args.telemetry != "off") as gw:
            front = procs.start_nginx(gw.url, repo_conf=True)
            procs.pin(front.pids(), ctx.gen_cores)
            try:
                results["gateway_nginx"] = await run_leg("gateway+nginx", front.url + url,
                                                         gw.proc.pid, cfg, ctx.progress)
            finally:
                front.stop()
        ctx.notes.append("gateway_nginx: repo nginx.conf with 1 worker and per-IP limits lifted "
                         "(one load-generator address); CPU/RSS are the gateway's only")
    elif procs.repo_nginx_conf() is None:
        ctx.notes.append("no nginx.conf at the repo root: gateway+nginx leg skipped")
    if args.workers > 1:
        name = f"gateway_{args.workers}_workers"
        with ctx.proxy("gateway", sim, telemetry=args.telemetry != "off", workers=args.workers) as gw:
            results[name] = await run_leg(name, gw.url + url, gw.proc.pid, cfg, ctx.progress)
        ctx.notes.append(f"{name}: unpinned, sharing the machine with the load generator and "
                         "the simulator")
    return results


async def _compared_legs(ctx: Context, sim: str) -> dict[str, Any]:
    """Direct, bare nginx and the gateway (telemetry on and off), ``--rounds`` times each."""
    args, cfg = ctx.args, ctx.cfg

    async def direct(label: str) -> dict[str, Any]:
        return await run_leg(label, sim + "/v1/messages", None, cfg, ctx.progress)

    def proxied(kind: str, telemetry: bool = True) -> Callable[[str], Awaitable[dict[str, Any]]]:
        async def leg(label: str) -> dict[str, Any]:
            with ctx.proxy(kind, sim, telemetry=telemetry) as proc:
                return await run_leg(label, proc.url + "/v1/messages", proc.proc.pid, cfg, ctx.progress)

        return leg

    compared: list[tuple[str, Callable[[str], Awaitable[dict[str, Any]]]]] = [("direct", direct)]
    if procs.nginx_binary() is not None:
        compared.append(("nginx", proxied("nginx")))
    else:
        ctx.notes.append("nginx is not installed: no reference legs, ratios unavailable")
    if args.floor:
        compared.append(("python_floor", proxied("floor")))
        compared.append(("python_relay", proxied("relay")))
        ctx.notes.append("python_floor: a uvloop TCP splice (gateway/bench/floor_relay.py), no HTTP "
                         "parsing: what moving the bytes through Python costs")
        ctx.notes.append("python_relay: the issue's minimal Python relay (gateway/bench/asgi_relay.py), "
                         "raw ASGI on uvicorn + aiohttp client, no checks, no telemetry")
    compared += [
        ("gateway" if on else "gateway_telemetry_off", proxied("gateway", on))
        for on in (True, False)
        if args.telemetry == "both" or (args.telemetry == "on") == on
    ]
    # Several rounds, every other one in reverse order: a machine that speeds up or slows down
    # during the run then weighs on every leg alike, and each figure is the median of its rounds.
    rounds: dict[str, list[dict[str, Any]]] = {}
    for i in range(args.rounds):
        for name, leg in compared if i % 2 == 0 else compared[::-1]:
            label = name if args.rounds == 1 else f"{name} ({i + 1}/{args.rounds})"
            rounds.setdefault(name, []).append(await leg(label))
    if args.rounds > 1:
        ctx.notes.append(f"direct, nginx and gateway legs: median of {args.rounds} rounds in "
                         "alternating order; cpu_us_per_event_rounds lists each round's figure")
    return {name: merge_rounds(figures) for name, figures in rounds.items()}


def _open_figures(state: LoadState, proxy: dict[str, Any], rss_at_peak: int) -> dict[str, Any]:
    return {
        "streams_requested": state.started, "peak_open": state.peak_open,
        "completed": state.completed, "errors": state.errors, "error_samples": state.error_samples,
        "ttft_p50_ms": None if not state.ttfts else round(pct(state.ttfts, 0.5) * 1000, 2),  # type: ignore[operator]
        "ttft_p99_ms": None if not state.ttfts else round(pct(state.ttfts, 0.99) * 1000, 2),  # type: ignore[operator]
        "rss_at_peak_mb": round(rss_at_peak / 2**20, 1) if rss_at_peak else None,
        **proxy,
    }


async def open_streams(ctx: Context) -> dict[str, Any]:
    """``--concurrency`` streams opened over ``--ramp`` seconds and held at ``--token-rate``."""
    args, cfg = ctx.args, ctx.cfg
    rate = args.token_rate
    # Each stream lasts ramp + duration, so all of them are open together for --duration seconds.
    events = int((args.ramp + args.duration) * rate) + 7  # --events does not apply here
    cfg = LegConfig(concurrency=args.concurrency, events=events, token_rate=rate,
                    duration=0, warmup=0, headers=cfg.headers)
    results: dict[str, Any] = {"stream_events": events}

    async def leg(name: str, url: str, pid: int | None) -> None:
        state, proxy, sampler = await run_phase(
            url + "/v1/messages", cfg, pid, token_rate=rate, duration=0, streams_per_worker=1,
            ramp_seconds=args.ramp, on_tick=ctx.progress(f"{name}: open streams"),
            record_gaps=False)
        results[name] = _open_figures(state, proxy, sampler.peak)

    if args.target:
        await leg("target", args.target, args.target_pid)
        return results
    sim = ctx.start_sim()
    if procs.nginx_binary() is not None:
        with ctx.proxy("nginx", sim) as ng:
            await leg("nginx", ng.url, ng.proc.pid)
    with ctx.proxy("gateway", sim, telemetry=args.telemetry != "off",
                   max_streams=args.concurrency + 100) as gw:
        await leg("gateway", gw.url, gw.proc.pid)
    return results


def _slope_mb_per_min(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of RSS over time, MB per minute."""
    if len(samples) < 3:
        return None
    xs = [t for t, _ in samples]
    ys = [rss / 2**20 for _, rss in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 60


async def soak(ctx: Context) -> dict[str, Any]:
    """Streams back to back for ``--duration`` seconds; RSS sampled, slope after the first 20 %."""
    args, cfg = ctx.args, ctx.cfg
    interval = max(0.5, min(10.0, args.duration / 60))

    async def leg(name: str, url: str, pid: int | None) -> dict[str, Any]:
        state, proxy, sampler = await run_phase(
            url + "/v1/messages", cfg, pid, token_rate=args.token_rate, duration=args.duration,
            on_tick=ctx.progress(f"{name}: soak"), record_gaps=False, sample_interval=interval)
        tail = [s for s in sampler.samples if s[0] >= 0.2 * args.duration]
        slope = _slope_mb_per_min(tail)
        return {
            "streams": state.completed, "errors": state.errors, "error_samples": state.error_samples,
            "events": state.events, "wall_s": round(state.wall, 1),
            "rss_start_mb": round(tail[0][1] / 2**20, 1) if tail else None,
            "rss_end_mb": round(tail[-1][1] / 2**20, 1) if tail else None,
            "rss_slope_mb_per_min": None if slope is None else round(slope, 3),
            "rss_samples_mb": [[round(t, 1), round(r / 2**20, 1)] for t, r in sampler.samples],
            **proxy,
        }

    if args.target:
        return {"target": await leg("target", args.target, args.target_pid)}
    sim = ctx.start_sim()
    with ctx.proxy("gateway", sim, telemetry=args.telemetry != "off") as gw:
        return {"gateway": await leg("gateway", gw.url, gw.proc.pid)}
