"""The JSON log format: one object per line, fields as logged, secrets redacted, odd values as repr."""

from __future__ import annotations

import io
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from gateway.settings import Settings
from gateway.telemetry.logs import configure_logging

if TYPE_CHECKING:
    from collections.abc import Iterator


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


@pytest.fixture
def json_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Configure JSON logging onto a stderr of our own; undo it afterwards."""
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    configure_logging(Settings(log_format="json"))

    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in err.getvalue().splitlines()]

    yield read
    structlog.reset_defaults()
    for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers[:], logger.propagate = handlers, propagate
        logger.setLevel(level)


def test_stream_line_is_one_json_object(json_lines: Any) -> None:
    """The per-stream line keeps every field, its own trace id, and None/list values as JSON."""
    structlog.get_logger("test").info(
        "stream.completed", route="/v1/messages", model="claude-sonnet-4-5", outcome="ok", ttft_ms=50.12,
        cost_usd=0.001865, stop_reason=None, tool_calls=["get_weather"], status=200, events=104,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736", span_id="00f067aa0ba902b7", note="café",
    )
    (line,) = json_lines()
    assert line.pop("timestamp").endswith("Z")
    assert line == {
        "route": "/v1/messages", "model": "claude-sonnet-4-5", "outcome": "ok", "ttft_ms": 50.12,
        "cost_usd": 0.001865, "stop_reason": None, "tool_calls": ["get_weather"], "status": 200, "events": 104,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7", "note": "café",
        "event": "stream.completed", "level": "info",
    }


def test_secrets_redacted_and_unknown_values_as_repr(json_lines: Any) -> None:
    """Secret-named keys are redacted; values JSON has no type for are rendered with repr()."""
    structlog.get_logger("test").warning("odd", api_key="sk-ant-secret", thing=Opaque())
    logging.getLogger("stdlib").warning("plain %s", "line")
    structured, plain = json_lines()
    assert structured["api_key"] == "[redacted]"
    assert structured["thing"] == "<opaque>"
    assert plain["event"] == "plain line"
    assert plain["logger"] == "stdlib"
