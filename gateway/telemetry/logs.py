"""structlog set-up: JSON lines by default, readable on a TTY, one canonical line per stream.

``configure_logging`` runs once at start-up. Every line carries the trace and span ids of the
current span when there is one, so a log line leads to its trace. A last processor drops any
key that names a secret, as a guard behind the rule that the code never logs one.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from opentelemetry import trace

if TYPE_CHECKING:
    from collections.abc import Callable

    from structlog.typing import EventDict, WrappedLogger

    from gateway.settings import Settings

__all__ = ("configure_logging", "get_logger")

_SECRET_KEYS = frozenset({"api_key", "x-api-key", "authorization", "anthropic_api_key", "password"})


def _add_trace_ids(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    if "trace_id" in event:  # the stream line names its own span
        return event
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event["trace_id"] = f"{ctx.trace_id:032x}"
        event["span_id"] = f"{ctx.span_id:016x}"
    return event


def _drop_secrets(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    for key in _SECRET_KEYS.intersection(event):
        event[key] = "[redacted]"
    return event


def _dumps(event: EventDict, default: Callable[[Any], Any]) -> str:
    # The same JSON object as json.dumps (compact, UTF-8 rather than \u escapes) at a seventh
    # of the cost: the per-stream line is rendered once for every stream.
    return msgspec.json.encode(event, enc_hook=default).decode()


def configure_logging(settings: Settings) -> None:
    """Configure structlog and the stdlib root logger (uvicorn's lines go through it too)."""
    level = getattr(logging, settings.log_level.upper())
    as_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
        _drop_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write per line: print() writes the line and its newline separately.
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # One line per stream is the access log; uvicorn's per-request line would double it.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def get_logger(name: str) -> Any:  # noqa: ANN401 - structlog's lazy proxy
    """Return a lazy structlog logger (safe at import time: it binds on first use)."""
    return structlog.get_logger(name)
