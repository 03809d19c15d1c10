"""End-to-end tests of the reference frontend in real headless Chromium against a real gateway.

The gateway runs as a process (``run_gateway``) with its embedded simulator, slowed down so
an answer visibly streams. Chromium is Debian's (``/usr/bin/chromium``) driven by Playwright;
no browser is downloaded. Screenshots go to ``test-artifacts/frontend/``.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from playwright.sync_api import sync_playwright

from tests.support.servers import ROOT, run_gateway

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from playwright.sync_api import Browser, Page, Request

    from tests.support.servers import ServerProcess

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts" / "frontend"

pytestmark = pytest.mark.system  # Debian's chromium, installed by `make test`

STREAM_START_TIMEOUT_MS = 15_000
STREAM_DONE_TIMEOUT_MS = 60_000


# ---- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway() -> Iterator[ServerProcess]:
    """A real gateway with its embedded simulator, streaming slowly enough to watch."""
    env = {
        "GATEWAY_SIM_TOKENS_PER_SECOND": "20",
        "GATEWAY_SIM_TTFT_SECONDS": "0.3",
        "GATEWAY_KEEPALIVE_SECONDS": "2",
    }
    with run_gateway(env) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser, gateway: ServerProcess) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 1300})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(gateway.url + "/")
    pg.wait_for_selector("#prompt")
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


# ---- helpers ----------------------------------------------------------------------------


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def ask(page: Page, prompt: str, *, tools: str = "", thinking: bool = False) -> None:
    """Fill the form and send with the keyboard (Enter)."""
    page.fill("#opt-tools", tools)
    page.set_checked("#opt-thinking", thinking)
    page.fill("#prompt", prompt)
    page.press("#prompt", "Enter")


def answer_text(page: Page) -> str:
    return str(page.eval_on_selector("#answer", "el => el.textContent"))


def wait_state(page: Page, *states: str, timeout: int = STREAM_DONE_TIMEOUT_MS) -> str:
    page.wait_for_function(
        "states => states.includes(document.body.dataset.state)", arg=list(states), timeout=timeout
    )
    return str(page.evaluate("document.body.dataset.state"))


def debug(page: Page, expr: str) -> Any:
    return page.evaluate(f"window.__gatewayDebug.{expr}")


def replayed_tokens(gateway: ServerProcess, stream_id: str) -> tuple[str, list[str]]:
    """The stream's full text as the gateway recorded it (resume route, from seq 0)."""
    text: list[str] = []
    types: list[str] = []
    with httpx.Client(timeout=30) as client:
        resp = client.get(
            f"{gateway.url}/v1/agent/stream/{stream_id}",
            headers={"last-event-id": f"{stream_id}:0", "accept": "text/event-stream"},
        )
    assert resp.status_code == 200, resp.text
    event = ""
    for line in resp.text.splitlines():  # JSON data never holds raw line breaks
        if line.startswith("event:"):
            event = line.partition(":")[2].strip()
        elif line.startswith("data:") and event:
            types.append(event)
            if event == "token":
                text.append(json.loads(line.partition(":")[2])["text"])
            event = ""
    return "".join(text), types


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def assert_contiguous_seqs(page: Page) -> None:
    """The page received each event exactly once, in order: seq 0, 1, 2, ... n."""
    seqs = [e["seq"] for e in debug(page, "events")]
    assert seqs == list(range(len(seqs))), f"gaps or duplicates in delivered seqs: {seqs}"


# ---- scenarios --------------------------------------------------------------------------


def test_first_tokens_visible_before_stream_ends(page: Page) -> None:
    assert page.is_visible("#sim-banner"), "the simulated-upstream banner is shown"
    ask(page, "Explain server-sent events in a few sentences.")
    page.wait_for_function(
        "document.querySelector('#answer').textContent.length > 0", timeout=STREAM_START_TIMEOUT_MS
    )
    first = answer_text(page)
    assert debug(page, "sawStreamEnd") is False, "text showed only after the stream ended"
    assert page.evaluate("document.body.dataset.state") == "streaming"
    assert page.is_enabled("#stop")
    assert page.get_attribute("#answer", "aria-live") == "polite"
    shot(page, "first-tokens")
    wait_state(page, "done")
    final = answer_text(page)
    assert final.startswith(first)
    assert len(final) > len(first)
    assert debug(page, "sawStreamEnd") is True
    assert_contiguous_seqs(page)
    assert page.inner_text("#stat-ttft") not in {"", "\u2013", "\u2026"}
    shot(page, "answer-done")


def test_tool_call_shows_in_timeline_with_result(page: Page) -> None:
    ask(page, "Find orders for customer Alice", tools="search_database")
    tool = page.locator("#timeline li.tool[data-tool-name='search_database']")
    tool.wait_for(timeout=STREAM_START_TIMEOUT_MS)
    tool.locator(".tool-status[data-status='done']").wait_for(timeout=STREAM_DONE_TIMEOUT_MS)
    output = tool.locator(".tool-output").inner_text()
    assert output.strip(), "the tool result is shown"
    phases = tool.locator(".phase").all_inner_texts()
    assert any(p.startswith("calling") for p in phases), phases
    assert any(re.fullmatch(r"executed [\d.]+ m?s", p) for p in phases), phases
    assert re.search(r"\d", tool.locator(".tool-status").inner_text()), "a duration is shown"
    shot(page, "tool-timeline")
    wait_state(page, "done")
    assert answer_text(page).strip(), "the agent answered after the tool result"
    shot(page, "tool-answer-done")


def test_reasoning_panel_opens(page: Page) -> None:
    ask(page, "Think about why streaming matters, then answer.", thinking=True)
    panel = page.locator("#reasoning")
    panel.wait_for(state="visible", timeout=STREAM_START_TIMEOUT_MS)
    assert panel.evaluate("el => el.open") is False, "collapsed by default"
    page.focus("#reasoning summary")
    page.keyboard.press("Enter")  # keyboard use
    page.wait_for_function("document.querySelector('#reasoning').open === true")
    page.locator("#reasoning-text").wait_for(state="visible")
    page.wait_for_function("document.querySelector('#reasoning-text').textContent.length > 0")
    wait_state(page, "done")
    assert page.inner_text("#reasoning-text").strip()
    shot(page, "reasoning-open")


def test_connection_killed_mid_stream_recovers_without_duplicates(
    page: Page, gateway: ServerProcess
) -> None:
    resumes: list[Request] = []
    page.on(
        "request",
        lambda r: (
            resumes.append(r)
            if r.method == "GET" and re.search(r"/v1/agent/stream/[^/]+$", r.url)
            else None
        ),
    )
    ask(page, "Write a paragraph about resumable streams.")
    page.wait_for_function(
        "document.querySelector('#answer').textContent.length > 10", timeout=STREAM_START_TIMEOUT_MS
    )
    assert debug(page, "sawStreamEnd") is False
    before = answer_text(page)
    assert debug(page, "dropConnection()") is True, "a connection was open to drop"
    shot(page, "killed-mid-stream")
    assert wait_state(page, "done", "failed") == "done", page.inner_text("#banners")
    final = answer_text(page)
    stream_id = debug(page, "streamId")
    assert stream_id
    assert resumes, "the client resumed through GET /v1/agent/stream/{id}"
    last_event_id = resumes[0].headers.get("last-event-id", "")
    assert last_event_id.startswith(f"{stream_id}:"), last_event_id
    expected, types = replayed_tokens(gateway, stream_id)
    assert types[-1] == "stream_end"
    assert final == expected, "the final text has no duplicate or missing part"
    assert final.startswith(before)
    assert_contiguous_seqs(page)
    shot(page, "resumed")


_DISCONNECT_METRICS = (
    re.compile(r'claude_gateway_requests_total\{[^}]*outcome="client_disconnect"[^}]*\} [1-9]'),
    re.compile(r"claude_gateway_client_disconnects_total\{[^}]*\} [1-9]"),
)


def _cancel_recorded(gateway: ServerProcess, stream_id: str) -> bool:
    """The gateway logged the stream as ended by the client, or counted it in /metrics."""
    for line in gateway.log_lines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("outcome") == "client_disconnect":
            mentioned = [record.get("stream_id"), record.get("agent_stream_id")]
            if stream_id in mentioned or not any(mentioned):
                return True
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    return any(p.search(metrics) for p in _DISCONNECT_METRICS)


def test_stop_button_cancels_the_upstream_call(page: Page, gateway: ServerProcess) -> None:
    ask(page, "Write a long story about a lighthouse keeper.")
    page.wait_for_function(
        "document.querySelector('#answer').textContent.length > 0", timeout=STREAM_START_TIMEOUT_MS
    )
    assert debug(page, "sawStreamEnd") is False
    # Sync Playwright delivers page events only inside its own calls, never during a
    # time.sleep poll: the cancel's response is awaited by Playwright itself.
    with page.expect_response(lambda r: r.url.endswith("/cancel"), timeout=10_000) as sent:
        page.click("#stop")
        assert wait_state(page, "stopped", timeout=10_000) == "stopped"
    cancel = sent.value
    stream_id = debug(page, "streamId")
    assert cancel.request.method == "POST"
    assert f"/v1/agent/stream/{stream_id}/cancel" in cancel.url
    assert cancel.status < 300, cancel.status
    stopped_text = answer_text(page)
    time.sleep(1.0)
    assert answer_text(page) == stopped_text, "nothing more is rendered after stop"
    assert wait_until(lambda: _cancel_recorded(gateway, stream_id)), (
        "the gateway recorded the cancelled stream:\n" + gateway.log()[-3000:]
    )
    assert page.is_disabled("#stop")
    assert page.is_enabled("#send")
    shot(page, "stopped")


def test_escape_stops_the_stream(page: Page) -> None:
    ask(page, "Tell me a long story about the sea.")
    page.wait_for_function(
        "document.querySelector('#answer').textContent.length > 0", timeout=STREAM_START_TIMEOUT_MS
    )
    page.keyboard.press("Escape")
    assert wait_state(page, "stopped", timeout=10_000) == "stopped"


def test_trace_waterfall_after_a_tool_call(page: Page) -> None:
    ask(page, "Find orders for customer Alice", tools="search_database")
    wait_state(page, "done")
    page.locator("#waterfall .wf-row").first.wait_for(timeout=10_000)
    rows = page.locator("#waterfall .wf-row")
    assert rows.count() >= 1
    names = rows.locator(".wf-span-name").all_inner_texts()
    assert any(n.startswith("chat") for n in names), names
    summary = page.inner_text("#waterfall .wf-summary")
    assert "TTFT" in summary
    page.locator("#waterfall").scroll_into_view_if_needed()
    shot(page, "trace-waterfall")


def test_phone_width_layout(page: Page) -> None:
    page.set_viewport_size({"width": 360, "height": 780})
    ask(page, "Find orders for customer Alice", tools="search_database", thinking=True)
    wait_state(page, "done")
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at 360px"
    assert page.is_visible("#send")
    assert page.is_visible("#stop")
    shot(page, "phone-360")
