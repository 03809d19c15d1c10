"""The standalone entry point runs in its own process and stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.support.servers import ROOT, free_port, wait_http

SCRIPT = (
    "import sys\n"
    "from gateway.simulator import SimulatorConfig, run_simulator\n"
    "run_simulator(SimulatorConfig(fast=True), '127.0.0.1', int(sys.argv[1]))\n"
)


def test_run_simulator_standalone_and_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(port)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/_simulator/stats", timeout=15, proc=proc)
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the captured signal on purpose.
        assert proc.wait(10) in {0, -signal.SIGTERM}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        assert proc.stdout is not None
        output = proc.stdout.read().decode()
        proc.stdout.close()
    assert "Traceback" not in output
