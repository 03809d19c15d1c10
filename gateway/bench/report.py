"""Machine description, target verdicts, the printed table, the JSON document, the progress line."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.bench.load import LoadState

__all__ = ("SCHEMA", "machine", "progress_factory", "render", "targets")

SCHEMA = "claude-gateway-bench/1"
GB = 1024.0


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, Python (and which build of it) and kernel of this machine."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_mb = None
    with contextlib.suppress(OSError, IndexError, ValueError):
        mem_mb = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {"cpu_model": model, "cores": os.cpu_count(), "memory_mb": mem_mb,
            "python": platform.python_version(),
            # The build matters as much as the version: the venv's link to it names which.
            "python_executable": os.path.realpath(sys.executable), "kernel": platform.release(),
            "platform": platform.platform()}


def _get(results: dict[str, Any], leg: str, phase: str, key: str) -> float | None:
    value = results.get(leg, {}).get(phase, {}).get(key)
    return None if value is None else float(value)


def _verdict(value: float | None, limit: float, *, below: bool = True) -> dict[str, Any]:
    ok = None if value is None else (value <= limit if below else value >= limit)
    return {"value": None if value is None else round(value, 3), "limit": limit, "pass": ok}


def _throughput_targets(r: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # CPU per event is judged in both phases: saturation (events batched, several per read) and
    # paced (each event its own read and write, where an interpreter's fixed cost per wake-up
    # shows most). See docs/performance.md for what a minimal Python relay reaches in each.
    for phase in ("saturation", "paced"):
        gw, ng = _get(r, "gateway", phase, "cpu_us_per_event"), _get(r, "nginx", phase, "cpu_us_per_event")
        out[f"cpu_per_event_vs_nginx_{phase}"] = _verdict(gw / ng if gw and ng else None, 1.5)
        off = _get(r, "gateway_telemetry_off", phase, "cpu_us_per_event")
        out[f"telemetry_overhead_{phase}"] = _verdict(gw / off - 1 if gw and off else None, 0.10)
    for q, limit in (("p50", 1.0), ("p99", 5.0)):
        t, d = _get(r, "gateway", "paced", f"ttft_{q}_ms"), _get(r, "direct", "paced", f"ttft_{q}_ms")
        out[f"added_ttft_{q}_ms"] = _verdict(t - d if t is not None and d is not None else None, limit)
    multi = next((k for k in r if k.startswith("gateway_") and k.endswith("_workers")), None)
    if multi is not None:
        out.update(_workers_targets(r, multi))
    return out


def _workers_targets(r: dict[str, Any], multi: str) -> dict[str, Any]:
    """N workers against one: throughput where there are cores for it, else the CPU evidence.

    Throughput can only double if each worker has a core: the bench itself and the simulator
    need one more. Without that, the verdict is "not measured", and two figures say whether it
    would scale: the workers' shares of the load (even?) and CPU per event (unchanged?).
    """
    workers = int(multi.split("_")[1])
    one = _get(r, "gateway", "saturation", "streams_per_s")
    many = _get(r, multi, "saturation", "streams_per_s")
    scaling = _verdict(many / one if one and many else None, 0.9 * workers, below=False)
    if (os.cpu_count() or 1) < workers + 1:
        scaling["pass"] = None
    split = r.get(multi, {}).get("saturation", {}).get("cpu_split") or []
    evenness = min(split) * len(split) if len(split) == workers else None
    cpu_one = _get(r, "gateway", "saturation", "cpu_us_per_event")
    cpu_many = _get(r, multi, "saturation", "cpu_us_per_event")
    return {
        "workers_scaling": scaling,
        "workers_load_evenness": _verdict(evenness, 0.8, below=False),
        "workers_cpu_per_event_vs_one": _verdict(cpu_many / cpu_one if cpu_one and cpu_many else None, 1.1),
    }


def targets(scenario: str, results: dict[str, Any]) -> dict[str, Any]:
    """Pass/fail of the issue's targets that this run can judge (``pass`` None: not measured)."""
    if scenario == "throughput":
        return _throughput_targets(results)
    leg = results.get("gateway") or results.get("target") or {}
    errors = leg.get("errors")
    out = {"errors": _verdict(None if errors is None else float(errors), 0)}
    if scenario == "open-streams":
        rss = leg.get("rss_at_peak_mb")
        out["rss_at_peak_mb"] = _verdict(None if rss is None else float(rss), GB)
        out["all_streams_open"] = _verdict(float(leg.get("peak_open", 0)),
                                           float(leg.get("streams_requested", 0)), below=False)
    else:
        slope = leg.get("rss_slope_mb_per_min")
        out["rss_slope_mb_per_min"] = _verdict(None if slope is None else abs(float(slope)), 1.0)
    return out


_ROWS: dict[str, list[tuple[str, str, str]]] = {
    "throughput": [
        ("streams/s (saturation)", "saturation", "streams_per_s"),
        ("events/s (saturation)", "saturation", "events_per_s"),
        ("CPU µs/event (saturation)", "saturation", "cpu_us_per_event"),
        ("CPU µs/event (paced)", "paced", "cpu_us_per_event"),
        ("proxy CPU, cores (paced)", "paced", "cpu_util"),
        ("TTFT p50 ms (paced)", "paced", "ttft_p50_ms"),
        ("TTFT p99 ms (paced)", "paced", "ttft_p99_ms"),
        ("added TTFT p50 ms", "paced", "added_ttft_p50_ms"),
        ("added TTFT p99 ms", "paced", "added_ttft_p99_ms"),
        ("gap p50 ms (paced)", "paced", "gap_p50_ms"),
        ("gap p99 ms (paced)", "paced", "gap_p99_ms"),
        ("RSS peak MB (saturation)", "saturation", "rss_peak_mb"),
        ("RSS KB/open stream", "saturation", "rss_per_stream_kb"),
        ("errors", "all", "errors"),
    ],
    "open-streams": [
        ("streams held", "", "peak_open"), ("errors", "", "errors"),
        ("RSS at peak MB", "", "rss_at_peak_mb"), ("RSS KB/open stream", "", "rss_per_stream_kb"),
        ("CPU µs/event", "", "cpu_us_per_event"), ("TTFT p50 ms", "", "ttft_p50_ms"),
        ("TTFT p99 ms", "", "ttft_p99_ms"),
    ],
    "soak": [
        ("streams", "", "streams"), ("errors", "", "errors"), ("RSS start MB", "", "rss_start_mb"),
        ("RSS end MB", "", "rss_end_mb"), ("RSS slope MB/min", "", "rss_slope_mb_per_min"),
        ("CPU µs/event", "", "cpu_us_per_event"),
    ],
}


def add_derived(results: dict[str, Any]) -> None:
    """Added TTFT against the direct leg, and a total error count per leg."""
    direct = results.get("direct", {}).get("paced", {})
    for name, leg in results.items():
        if "paced" not in leg:
            continue
        for q in ("p50", "p99"):
            t, d = leg["paced"].get(f"ttft_{q}_ms"), direct.get(f"ttft_{q}_ms")
            ok = t is not None and d is not None and name != "direct"
            leg["paced"][f"added_ttft_{q}_ms"] = round(t - d, 3) if ok else None
        leg["all"] = {"errors": leg["saturation"]["errors"] + leg["paced"]["errors"]}


def _cell(value: Any, ref: Any) -> str:  # noqa: ANN401 - JSON values
    if value is None:
        return "-"
    text = f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
    if isinstance(value, int | float) and isinstance(ref, int | float) and ref > 0 and value >= 0:
        text += f" ({value / ref:.2f}x)"
    return text


def render(doc: dict[str, Any]) -> str:
    """The human table: rows are metrics, columns are legs (with the ratio to nginx)."""
    results, scenario = doc["results"], doc["config"]["scenario"]
    legs = [k for k, v in results.items() if isinstance(v, dict)]
    rows = []
    for label, phase, key in _ROWS[scenario]:
        row = [label]
        for leg in legs:
            value = results[leg].get(phase, {}).get(key) if phase else results[leg].get(key)
            ref_leg = results.get("nginx", {})
            ref = ref_leg.get(phase, {}).get(key) if phase else ref_leg.get(key)
            row.append(_cell(value, ref if leg != "nginx" else None))
        rows.append(row)
    header = ["metric", *legs]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    m = doc["machine"]
    out = [f"claude-gateway bench — {scenario} — {m['cpu_model']}, {m['cores']} cores, "
           f"Python {m['python']} ({m['python_executable']})", "", *lines, ""]
    if "nginx" in results:
        out.append("(x) = ratio to the bare nginx reference")
    for name, verdict in doc["targets"].items():
        mark = {True: "PASS", False: "FAIL", None: "n/a "}[verdict["pass"]]
        out.append(f"  {mark}  {name}: {verdict['value']} (limit {verdict['limit']})")
    out.extend(f"note: {n}" for n in doc["notes"])
    return "\n".join(out)


def progress_factory(enabled: bool) -> Callable[[str], Callable[[LoadState, float], None]]:
    """A progress line on stderr (carriage return on a terminal, a line per phase otherwise)."""
    tty = sys.stderr.isatty()
    last: list[float] = [0.0]

    def factory(label: str) -> Callable[[LoadState, float], None]:
        def tick(state: LoadState, elapsed: float) -> None:
            if not enabled:
                return
            line = (f"{label:<32} {elapsed:6.1f}s  streams {state.completed:>7,}  open "
                    f"{state.open_now:>5}  events {state.events:>10,}  errors {state.errors}")
            now = time.monotonic()
            if tty:
                sys.stderr.write("\r" + line + "\x1b[K")
                sys.stderr.flush()
            elif now - last[0] >= 5:
                last[0] = now
                sys.stderr.write(line + "\n")

        return tick

    return factory
