"""The page at / in a real browser: Debian's Chromium, headless, driven by Playwright, with a fake
microphone playing espeak-ng speech, against a real server running the bundled demo model.

The page captures the microphone through emostt.js and its AudioWorklet, streams it at the
AudioContext's rate (or resampled to 16 kHz in the worklet) with the token as a subprotocol, and
must show "turn left" with its emotion, the mood, and no error of any kind in the browser."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from websockets.sync.client import connect

from emostt.audio import read_audio_file
from emostt.inference.sensevoice import SenseVoiceEngine
from tests.clients.turn_server import END_OF_TURN_CONFIDENCE, FINAL_TEXT, TURN
from tests.conftest import espeak
from tests.integration.server import Server, running_server, service_settings
from tests.web.browser import SETUP_HINT, chromium_path, launch, write_microphone_wav

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Response, WebSocketRoute

TOKEN = "web-test-token"
EMOTIONS = {"happy", "sad", "angry", "neutral", "fearful", "disgusted", "surprised", "unknown"}
NATIVE_RATES = {8000, 16000, 22050, 24000, 32000, 44100, 48000}
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    # A missing browser is a broken set-up, not a reason to skip: CI must run this.
    if importlib.util.find_spec("playwright") is None:
        pytest.fail(f"the playwright package is missing: {SETUP_HINT}")
    if chromium_path() is None:
        pytest.fail(f"no Chromium found (set EMOSTT_CHROMIUM or install Debian's chromium): {SETUP_HINT}")
    from playwright.sync_api import sync_playwright

    folder = tmp_path_factory.mktemp("microphone")
    speech = read_audio_file(espeak("turn left", folder / "turn_left.wav"))
    wav = write_microphone_wav([speech], folder / "microphone.wav")  # looped by Chromium
    with sync_playwright() as playwright:
        chromium = launch(playwright, wav)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(demo_engine: SenseVoiceEngine) -> Iterator[Server]:
    # One session at a time: the reconnection test fills the server with one connection.
    settings = service_settings(session_defaults={}, auth_tokens={TOKEN: "*"}, max_connections=1)
    with running_server(settings, demo_engine) as srv:
        yield srv


@dataclass
class Problems:
    """Everything that went wrong in the page: uncaught exceptions, console errors (CSP
    violations among them), failed requests and HTTP errors."""

    found: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.found.append(f"page error: {exc}"))
        page.on("console", self._console)
        page.on("requestfailed", lambda req: self.found.append(f"request failed: {req.url} {req.failure}"))
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.found.append(f"console: {message.text}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.found.append(f"HTTP {response.status}: {response.url}")


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, Problems]]:
    context = browser.new_context()
    tab = context.new_page()
    problems = Problems()
    problems.watch(tab)
    yield tab, problems
    context.close()


def open_page(page: Page, server: Server, query: str = "") -> None:
    page.goto(f"http://{server.base}/?device=browser-test{query}")
    start = page.get_by_role("button", name="Start")
    start.wait_for()
    assert start.is_enabled(), page.locator("#status").inner_text()


def press(page: Page, name: str, key: str) -> None:
    """Keyboard only: focus the button and press Enter or Space."""
    button = page.get_by_role("button", name=name)
    button.focus()
    page.keyboard.press(key)


@pytest.mark.parametrize(("query", "resampled"), [("", False), ("&resample=1", True)], ids=["native", "16k"])
def test_page_shows_speech_from_the_microphone_with_its_emotion(
    page: tuple[Page, Problems], server: Server, query: str, resampled: bool
) -> None:
    tab, problems = page
    open_page(tab, server, query)
    tab.get_by_label("Token").fill(TOKEN)
    press(tab, "Start", "Enter")

    final = tab.locator(".final", has_text="turn left").first
    final.wait_for(timeout=TIMEOUT_MS)
    status = tab.locator("#status").inner_text()
    rate = int(status.split("Listening: ")[1].split(" Hz")[0])
    assert rate == 16000 if resampled else rate in NATIVE_RATES, status

    emotion = final.locator(".emotion-tag").inner_text()
    assert emotion in EMOTIONS
    bars = final.locator(".scores li")
    assert bars.count() == 3
    assert bars.first.locator(".score-label").inner_text() == emotion  # the label is the top score
    assert bars.first.locator(".score-value").inner_text().endswith("%")  # each bar has its text
    assert final.locator(".language").inner_text().startswith("language en")
    assert final.locator(".latency").inner_text().endswith(" ms")
    assert tab.locator("#mood-label").inner_text() in EMOTIONS
    assert tab.locator("#mood-timeline .column").count() >= 1

    press(tab, "Stop", "Space")
    tab.get_by_text("Stopped.").wait_for(timeout=TIMEOUT_MS)
    assert tab.get_by_role("button", name="Start").is_enabled()
    assert problems.found == []


def test_page_reports_a_refused_token(page: tuple[Page, Problems], server: Server) -> None:
    tab, problems = page
    open_page(tab, server)
    tab.get_by_label("Token").fill("wrong-token")
    tab.get_by_role("button", name="Start").click()
    # The error event shows first ("Error: ... (unauthorized)"), the close frame right after.
    tab.locator("#status", has_text="Closed:").wait_for(timeout=TIMEOUT_MS)
    status = tab.locator("#status").inner_text()
    assert status.startswith("Closed:") and "(unauthorized)" in status  # refused for good: no reconnecting
    assert tab.get_by_role("button", name="Start").is_enabled()
    assert tab.get_by_label("Token").is_editable()
    assert problems.found == []


def test_page_reconnects_when_the_server_has_room_again(page: tuple[Page, Problems], server: Server) -> None:
    tab, problems = page
    open_page(tab, server)
    tab.get_by_label("Token").fill(TOKEN)
    with connect(server.ws_url("holder"), additional_headers={"Authorization": f"Bearer {TOKEN}"}) as holder:
        assert orjson.loads(holder.recv(timeout=10))["type"] == "ready"
        tab.get_by_role("button", name="Start").click()  # refused: 1013 too_many_connections
        tab.get_by_text("reconnecting in").wait_for(timeout=TIMEOUT_MS)
    tab.get_by_text("Listening:").wait_for(timeout=TIMEOUT_MS)  # backoff: 0.5 s, 1 s, 2 s… with jitter
    tab.locator(".final", has_text="turn left").first.wait_for(timeout=TIMEOUT_MS)
    tab.get_by_role("button", name="Stop").click()
    tab.get_by_text("Stopped.").wait_for(timeout=TIMEOUT_MS)
    assert problems.found == []


def test_page_shows_eager_and_semantic_turn_ends(page: tuple[Page, Problems], server: Server) -> None:
    """``?turns=semantic`` ticks the box; the page asks for semantic turns and marks the events of
    the turn. The session is Playwright's stand-in for the server (routeWebSocket), playing the
    clients' scripted turn (tests/clients/turn_server.py) one event at a time."""
    tab, problems = page
    sockets: list[WebSocketRoute] = []
    configs: list[dict[str, Any]] = []

    def on_message(ws: WebSocketRoute, message: str | bytes) -> None:
        if isinstance(message, str) and orjson.loads(message)["type"] == "config":
            configs.append(orjson.loads(message))
        elif isinstance(message, str) and orjson.loads(message)["type"] == "close":
            ws.close(code=1000)

    def on_socket(ws: WebSocketRoute) -> None:
        sockets.append(ws)
        ws.on_message(lambda message: on_message(ws, message))
        ready = {"type": "ready", "device_id": "d", "model": {"name": "scripted"}, "sample_rate": 16000}
        ws.send(orjson.dumps({**ready, "config": {}, "session_id": "s1", "seq": 1}).decode())

    tab.route_web_socket(re.compile(r"/ws/stt/"), on_socket)
    open_page(tab, server, "&turns=semantic")
    assert tab.get_by_label("Semantic turn ends").is_checked()
    press(tab, "Start", "Enter")
    tab.get_by_text("Listening:").wait_for(timeout=TIMEOUT_MS)
    [ws] = sockets
    note = tab.locator("#turn-note")
    for event in TURN:
        ws.send(orjson.dumps({**event, "session_id": "s1", "seq": 2}).decode())
        if event["type"] == "eager_end_of_turn":
            expected = f"⏎? eager turn end ({event['confidence']:.2f})"
            tab.wait_for_function("t => document.getElementById('turn-note').textContent === t", arg=expected)
        elif event["type"] == "turn_resumed":
            tab.get_by_text("↻ turn resumed").wait_for(timeout=TIMEOUT_MS)
    final = tab.locator(".final", has_text=FINAL_TEXT).first
    final.wait_for(timeout=TIMEOUT_MS)
    assert final.locator(".turn").inner_text() == f"⏎ turn end ({END_OF_TURN_CONFIDENCE:.2f})"
    assert note.inner_text() == ""  # the eager marker goes with the final
    assert configs[0]["turn_detection"] == {"type": "semantic", "eagerness": "auto"}
    press(tab, "Stop", "Space")
    tab.get_by_text("Stopped.").wait_for(timeout=TIMEOUT_MS)
    assert problems.found == []


def test_page_sends_keyterms_and_shows_the_ones_each_final_holds(
    page: tuple[Page, Problems], server: Server
) -> None:
    """``?keyterms=`` fills the field; the session gets them (the finals' ``keyterms_matched`` is
    only there with keyterms set) and each final shows those it holds. While listening, Enter in
    the field sends the new list to the session instead of stopping it."""
    tab, problems = page
    open_page(tab, server, "&keyterms=left,%20Ada%20Lovelace")
    keyterms = tab.get_by_label("Keyterms")
    assert keyterms.input_value() == "left, Ada Lovelace"
    tab.get_by_label("Token").fill(TOKEN)
    press(tab, "Start", "Enter")
    tab.locator(".final .keyterms", has_text="keyterms: left").first.wait_for(timeout=TIMEOUT_MS)
    keyterms.fill("turn")
    keyterms.press("Enter")
    tab.locator(".final .keyterms", has_text="keyterms: turn").first.wait_for(timeout=TIMEOUT_MS)
    assert tab.get_by_role("button", name="Stop").is_enabled()  # still listening
    press(tab, "Stop", "Space")
    tab.get_by_text("Stopped.").wait_for(timeout=TIMEOUT_MS)
    assert problems.found == []


def test_page_is_usable_at_phone_width(browser: Browser, server: Server) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    tab = context.new_page()
    problems = Problems()
    problems.watch(tab)
    open_page(tab, server)
    # Nothing wider than the screen: no sideways scrolling.
    width: Any = tab.evaluate("document.documentElement.scrollWidth")
    assert width <= 360
    box = tab.get_by_role("button", name="Start").bounding_box()
    assert box is not None and box["height"] >= 44 and box["width"] >= 300  # a full-width touch target
    context.close()
    assert problems.found == []
