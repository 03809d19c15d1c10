"""Build: the modules every stream runs through, compiled to C with mypyc.

Why: a paced stream wakes the gateway once per event, and each wake-up ran about 140 bytecodes
of these modules in four Python frames. Compiled, the same source runs as C calls on native
classes (docs/performance.md, "Where the time goes", Done 15). They are the project's own
mypy-strict modules, so nothing is written twice: ``GATEWAY_COMPILE=0 pip install .`` installs
the same modules as plain Python, for a platform without a C compiler or for a debugger or
coverage tracer that must step through them.

An editable install (``make``) puts the compiled modules beside their sources, where they take
precedence: the Makefile reinstalls when one of them changes, and
``tests/test_compiled.py`` fails on a stale or missing build.
"""

from __future__ import annotations

import os

from setuptools import setup

#: Compiled: the relay's per-event path and the per-stream path beside it. Not the Litestar
#: routes (Litestar reads their signatures), nor the request and reply models (msgspec reads
#: their annotations), nor the modules a stream never enters. Two more traps of the compiler
#: (mypy 2.4.1): a property that subclasses override, read on an exception class, segfaults
#: (read it through ``Any``); a generator expression over an endless iterator never returns.
COMPILED = [
    "gateway/errors.py",
    "gateway/proxy/chunked.py",
    "gateway/proxy/client.py",
    "gateway/proxy/connection.py",
    "gateway/proxy/disconnect.py",
    "gateway/proxy/fast_path.py",
    "gateway/proxy/guard.py",
    "gateway/proxy/messages.py",
    "gateway/proxy/observer.py",
    "gateway/proxy/relay.py",
    "gateway/proxy/server_write.py",
    "gateway/proxy/sse.py",
    "gateway/proxy/upstream.py",
    "gateway/security/auth.py",
    "gateway/security/limits.py",
    "gateway/telemetry/logs.py",
    "gateway/telemetry/metrics.py",
    "gateway/telemetry/models.py",
    "gateway/telemetry/pricing.py",
    "gateway/telemetry/series.py",
    "gateway/telemetry/server_span.py",
    "gateway/telemetry/spans.py",
    "gateway/telemetry/stream.py",
    "gateway/telemetry/tracing.py",
]


def _extensions() -> list[object]:
    if os.environ.get("GATEWAY_COMPILE", "1") == "0":
        return []
    from mypyc.build import mypycify  # noqa: PLC0415 - a build requirement, only when compiling

    # The build environment holds the libraries the compiled modules call (pyproject's
    # build-system requires), so mypyc sees their types; any other import is Any. The project's
    # strict configuration is for `make typecheck`.
    options = ["--config-file=", "--ignore-missing-imports"]
    return mypycify([*options, *COMPILED], opt_level="3")


setup(ext_modules=_extensions())
