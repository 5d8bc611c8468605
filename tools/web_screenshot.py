"""Screenshot of the browser page (docs/web-ui.png) with a real transcript.

Runs the server with the bundled demo model, and Debian's Chromium (driven by Playwright, as in
tests/web/test_browser.py) whose fake microphone plays held-out demo clips once: a few neutral
utterances, then happy ones, so the picture shows finals with their emotion scores and a mood
that changes. Not part of CI (the test takes no screenshot); run it after changing the page:

    .venv/bin/python tools/web_screenshot.py [--out docs/web-ui.png] [--width 1000 --height 700]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import ViewportSize, sync_playwright

from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine

# The tests' server and browser helpers (tools/, for demo_data, is already first on the path).
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from tests.integration.server import running_server, service_settings
from tests.web.browser import launch, write_microphone_wav

import demo_data

ROOT = Path(__file__).resolve().parents[1]

# (language, emotion) of each utterance, in order: a calm start, then a sustained change.
SCRIPT = [("en", "neutral"), ("zh", "neutral"), ("en", "neutral"), *[("en", "angry")] * 5]


def pick_clips() -> list[demo_data.Clip]:
    """Held-out clips (voices the model never heard) following SCRIPT, each a different phrase."""
    specs = [s for s in demo_data.split_specs("heldout") if s.kind == "speech" and s.event == "speech"]
    chosen: list[demo_data.ClipSpec] = []
    for language, emotion in SCRIPT:
        used = {s.text for s in chosen}
        chosen.append(
            next(s for s in specs if (s.language, s.emotion) == (language, emotion) and s.text not in used)
        )
    return [demo_data.make_clip(spec) for spec in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "web-ui.png")
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=700)
    args = parser.parse_args()

    clips = pick_clips()
    engine = SenseVoiceEngine.load("demo", EngineOptions(device="cpu", precision="fp32"))
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(service_settings(session_defaults={}), engine) as server,
        sync_playwright() as playwright,
    ):
        wav = write_microphone_wav([c.audio for c in clips], Path(tmp) / "microphone.wav", gap_s=1.2)
        browser = launch(playwright, wav, loop=False)
        viewport: ViewportSize = {"width": args.width, "height": args.height}
        page = browser.new_page(viewport=viewport, is_mobile=args.width < 600)
        page.goto(f"http://{server.base}/?device=kiosk-1")
        page.get_by_role("button", name="Start").click()
        deadline = time.monotonic() + 60
        while page.locator(".final").count() < len(clips):
            if time.monotonic() > deadline:
                raise SystemExit(f"only {page.locator('.final').count()} of {len(clips)} finals arrived")
            time.sleep(0.2)
        page.screenshot(path=str(args.out), animations="disabled")
        for clip, text in zip(clips, reversed(page.locator(".final .text").all_inner_texts()), strict=True):
            print(f"{clip.language} {clip.emotion:8} {clip.text!r} -> {text!r}")
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
