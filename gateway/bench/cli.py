"""``claude-gateway bench``: start the processes, drive the load, print one table (or ``--json``).

See ``docs/performance.md`` for the method and the latest figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from typing import Any

from gateway.bench import report, scenarios

__all__ = ("build_parser", "main")


def build_parser() -> argparse.ArgumentParser:
    """The bench's command line."""
    p = argparse.ArgumentParser(
        prog="claude-gateway bench",
        description="Measure the gateway against direct access and a bare nginx proxy_pass.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--scenario", choices=("throughput", "open-streams", "soak"), default="throughput")
    p.add_argument("--concurrency", type=int, default=None,
                   help="concurrent streams (default: 50; open-streams 2000; soak 200)")
    p.add_argument("--events", type=int, default=100, help="events per stream (stream length)")
    p.add_argument("--token-rate", type=float, default=None,
                   help="tokens/s of paced streams, 0 = fast (default: throughput 80; "
                        "open-streams 2; soak 50)")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds per phase (default: throughput 10; open-streams hold 20; soak 600)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per leg")
    p.add_argument("--ramp", type=float, default=10.0, help="open-streams: seconds to open them all")
    p.add_argument("--workers", type=int, default=1, help="also measure a gateway with N workers")
    p.add_argument("--rounds", type=int, default=1,
                   help="throughput: run the direct, nginx and gateway legs N times in alternating "
                        "order and report each figure's median (for noisy machines)")
    p.add_argument("--telemetry", choices=("on", "off", "both"), default="both")
    p.add_argument("--floor", action="store_true",
                   help="throughput: also measure python_floor, a uvloop TCP splice with no HTTP "
                        "parsing (what moving the bytes through Python costs), and python_relay, "
                        "the minimal ASGI relay the performance issue measured")
    p.add_argument("--target", default=None, help="measure an already running gateway at this URL")
    p.add_argument("--target-pid", type=int, default=None, help="its pid, for CPU and RSS figures")
    p.add_argument("--api-key", default="sk-bench", help="x-api-key sent with every request")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument("--json", action="store_true", help="print the JSON document instead of the table")
    p.add_argument("--output", default=None, help="also write the JSON document to this file")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


_DEFAULTS = {"throughput": (50, 80.0, 10.0), "open-streams": (2000, 2.0, 20.0), "soak": (200, 50.0, 600.0)}


def _resolve(args: argparse.Namespace) -> None:
    conc, rate, duration = _DEFAULTS[args.scenario]
    args.concurrency = conc if args.concurrency is None else args.concurrency
    args.token_rate = rate if args.token_rate is None else args.token_rate
    args.duration = duration if args.duration is None else args.duration
    if args.target:
        args.target = args.target.rstrip("/")
    for name in ("concurrency", "events", "workers", "rounds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"claude-gateway bench: --{name} must be >= 1")
    if args.token_rate < 0 or args.duration < 0 or args.warmup < 0:
        raise SystemExit("claude-gateway bench: --token-rate, --duration and --warmup must be >= 0")
    if args.scenario == "open-streams" and args.token_rate <= 0:
        raise SystemExit("claude-gateway bench: open-streams needs --token-rate > 0")


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, need)) if hard != resource.RLIM_INFINITY else max(soft, need)
    if want > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def _run(ctx: scenarios.Context) -> dict[str, Any]:
    runner = {"throughput": scenarios.throughput, "open-streams": scenarios.open_streams,
              "soak": scenarios.soak}[ctx.args.scenario]
    return await runner(ctx)


def _event_loop() -> Any:  # noqa: ANN401 - uvloop when installed, else asyncio's
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: list[str]) -> int:
    """Run the bench; 0 when it ran (targets missed are reported, not an exit status), 1 on error."""
    args = build_parser().parse_args(argv)
    _resolve(args)
    _raise_fd_limit(4 * args.concurrency + 1024)  # children inherit it
    ctx = scenarios.Context(args, report.progress_factory(not args.quiet))
    started = time.time()
    loop = _event_loop()
    try:
        results = loop.run_until_complete(_run(ctx))
    except (RuntimeError, OSError) as exc:
        print(f"\nclaude-gateway bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nclaude-gateway bench: interrupted", file=sys.stderr)
        return 130
    finally:
        ctx.close()
        loop.close()
        if not args.quiet:
            print(file=sys.stderr)
    if args.scenario == "throughput":
        report.add_derived(results)
    config = {k: v for k, v in vars(args).items() if k not in {"json", "quiet", "output", "api_key"}}
    doc = {
        "schema": report.SCHEMA,
        "machine": report.machine(),
        "config": {**config, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                   "elapsed_s": round(time.time() - started, 1), "argv": argv},
        "results": results,
        "targets": report.targets(args.scenario, results),
        "notes": ctx.notes,
    }
    text = json.dumps(doc, indent=2)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    print(text if args.json else report.render(doc))
    return 0
