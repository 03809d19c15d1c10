"""The JSON log format: one object per line, fields as logged, secrets redacted, odd values as repr."""

from __future__ import annotations

import datetime
import io
import json
import logging
import re
import sys
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from gateway.settings import Settings
from gateway.telemetry.logs import IsoStamper, configure_logging, stream_line_writer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., io.StringIO]]:
    """Configure logging with some settings onto a stderr of our own; undo it afterwards."""
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]

    def configured(**settings: Any) -> io.StringIO:
        err = io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        configure_logging(Settings(**settings))
        return err

    yield configured
    structlog.reset_defaults()
    for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers[:], logger.propagate = handlers, propagate
        logger.setLevel(level)


@pytest.fixture
def json_lines(configure: Callable[..., io.StringIO]) -> Any:
    """JSON logging; returns a reader of the lines written."""
    err = configure(log_format="json")
    return lambda: [json.loads(line) for line in err.getvalue().splitlines()]


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


class Custom:
    def __structlog__(self) -> str:
        return "custom"


def stream_fields() -> dict[str, Any]:
    return {"route": "/v1/messages", "outcome": "ok", "ttft_ms": 50.12, "stop_reason": None,
            "tool_calls": ["get_weather"], "note": "café", "odd": Opaque(), "custom": Custom(),
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}


def test_the_stream_line_is_the_chains_line(configure: Callable[..., io.StringIO]) -> None:
    """Written past structlog's processor loop, the per-stream line is the chain's line, byte for byte."""
    err = configure(log_format="json")
    structlog.get_logger("gateway.stream").info("stream.completed", **stream_fields())
    stream_line_writer("gateway.stream")("stream.completed", stream_fields())
    chain, direct = (re.sub(r'"timestamp":"[^"]+"', "T", line) for line in err.getvalue().splitlines())
    assert direct == chain
    assert json.loads(chain.replace("T", '"timestamp":0'))["custom"] == "custom"


def test_the_stream_line_follows_the_level_the_console_and_capture(configure: Callable[..., io.StringIO]) -> None:
    """No line below the level; a readable one on a console; structlog.testing still sees it."""
    err = configure(log_format="json", log_level="warning")
    stream_line_writer("gateway.stream")("stream.completed", stream_fields())
    assert err.getvalue() == ""
    err = configure(log_format="console")
    stream_line_writer("gateway.stream")("stream.completed", stream_fields())
    assert "stream.completed" in err.getvalue()
    assert not err.getvalue().startswith("{")
    err = configure(log_format="json")
    write = stream_line_writer("gateway.stream")
    with structlog.testing.capture_logs() as captured:
        write("stream.completed", stream_fields())
    assert [line["event"] for line in captured] == ["stream.completed"]
    assert err.getvalue() == ""
    write("stream.completed", stream_fields())
    assert json.loads(err.getvalue())["event"] == "stream.completed"


def test_uvicorns_access_log_is_off(configure: Callable[..., io.StringIO]) -> None:
    """No handler reaches uvicorn's access logger: its protocol then skips the per-request line's work."""
    configure(log_format="json")
    assert not logging.getLogger("uvicorn.access").hasHandlers()
    assert logging.getLogger("uvicorn.error").hasHandlers()


@pytest.mark.parametrize(
    "ns",
    [
        0,
        1_764_892_800_000_000_000,  # a second's start: no fraction written
        1_764_892_800_000_001_000,
        1_764_892_800_000_000_999,  # under a microsecond: floored, as datetime.now() does
        1_764_892_859_999_999_999,
        1_764_892_860_123_456_789,  # the next minute, after the one before
        1_764_892_800_500_000_000,  # back in time: the cached second is not reused
        4_102_444_799_999_999_000,
    ],
)
def test_iso_stamper_writes_what_structlog_writes(ns: int) -> None:
    """The stamper's string is structlog's ISO UTC stamp (``isoformat``, ``Z``) for the same instant."""
    stamper = IsoStamper()
    stamper.iso(1_764_892_859_000_000_000)  # a cached second that differs
    whole = datetime.datetime.fromtimestamp(ns // 10**9, datetime.UTC)
    expected = whole.replace(microsecond=ns // 1000 % 10**6).isoformat().replace("+00:00", "Z")
    assert stamper.iso(ns) == expected
    assert stamper.iso(ns) == expected  # from the cached second too


def test_iso_stamper_stamps_as_structlog_does() -> None:
    """Side by side with structlog's own ``TimeStamper``: the same key, the same shape, the same time."""
    ours = IsoStamper()(None, "info", {})
    theirs = structlog.processors.TimeStamper(fmt="iso", utc=True)(None, "info", {})
    assert ours.keys() == theirs.keys() == {"timestamp"}
    pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z"
    assert re.fullmatch(pattern, ours["timestamp"]), ours
    apart = datetime.datetime.fromisoformat(theirs["timestamp"]) - datetime.datetime.fromisoformat(ours["timestamp"])
    assert abs(apart.total_seconds()) < 1
