"""The ``claude-gateway`` command: ``serve``, ``simulator``, ``bench``, ``hash-key``.

This is the one place that reads the environment (through ``Settings.from_env``). A bad setting
ends the command with one line naming the variable and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import TYPE_CHECKING

from gateway.settings import Settings, SettingsError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ("main",)


def _settings(**overrides: object) -> Settings:
    env_file = os.environ.get("GATEWAY_ENV_FILE", ".env") or None
    settings = Settings.from_env(env_file=env_file)
    changes = {k: v for k, v in overrides.items() if v is not None}
    return settings.with_changes(**changes) if changes else settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - keeps `--help` fast

    settings = _settings(host=args.host, port=args.port, workers=args.workers)
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Must be set before any worker imports prometheus_client.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="claude-gateway-metrics-")
    # Workers rebuild settings from the environment; pass the command line on.
    os.environ.update({"GATEWAY_HOST": settings.host, "GATEWAY_PORT": str(settings.port)})
    from gateway.telemetry.logs import configure_logging  # noqa: PLC0415

    configure_logging(settings)
    if settings.simulated:
        print(
            f"claude-gateway: no ANTHROPIC_API_KEY/ANTHROPIC_BASE_URL set, serving the embedded "
            f"simulator on http://{settings.host}:{settings.port}",
            file=sys.stderr,
        )
    uvicorn.run(
        "gateway.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        http="httptools",
        loop="uvloop",
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=75,
        backlog=4096,
    )
    return 0


def _simulator(args: argparse.Namespace) -> int:
    from gateway.simulator import SimulatorConfig, run_simulator  # noqa: PLC0415

    settings = _settings(sim_fast=True if args.fast else None)
    print(f"claude-gateway simulator on http://{args.host}:{args.port}", file=sys.stderr)
    run_simulator(SimulatorConfig.from_settings(settings), args.host, args.port)
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    from gateway.security.auth import hash_key_command  # noqa: PLC0415

    print(hash_key_command(args.key, stdin=sys.stdin if args.key is None else None))
    return 0


def _bench(argv: Sequence[str]) -> int:
    from gateway.bench.cli import main as bench_main  # noqa: PLC0415

    return int(bench_main(list(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    parser = argparse.ArgumentParser(prog="claude-gateway", description="Claude Stream Gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default=None, help="listen address (GATEWAY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="listen port (GATEWAY_PORT, default 8000)")
    serve.add_argument("--workers", type=int, default=None, help="worker processes (GATEWAY_WORKERS)")
    serve.set_defaults(func=_serve)
    sim = sub.add_parser("simulator", help="run the simulated Anthropic API alone")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=9100)
    sim.add_argument("--fast", action="store_true", help="no pacing (benchmarks)")
    sim.set_defaults(func=_simulator)
    hk = sub.add_parser("hash-key", help="print the SHA-256 digest of a gateway key (stdin if omitted)")
    hk.add_argument("key", nargs="?", default=None)
    hk.set_defaults(func=_hash_key)
    sub.add_parser("bench", help="measure the gateway (see `claude-gateway bench --help`)")
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"claude-gateway: bad setting: {exc}", file=sys.stderr)
        return 2
