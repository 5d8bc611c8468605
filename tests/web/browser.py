"""A real Chromium (Debian's package, driven by Playwright) whose microphone plays a WAV file.

Chromium's fake capture device (``--use-fake-device-for-media-stream``) reads
``--use-file-for-fake-audio-capture=<wav>`` and loops it (a ``%noloop`` suffix plays it once);
``--use-fake-ui-for-media-stream`` grants the microphone without a prompt. Playwright's own
browser download is never used: ``executable_path`` points at the system Chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

SETUP_HINT = "run `bash tools/setup.sh` (it installs Debian's chromium and the playwright package)"


def chromium_path() -> str | None:
    """``EMOSTT_CHROMIUM``, else ``chromium`` on PATH, else None."""
    configured = os.environ.get("EMOSTT_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def launch(playwright: Playwright, wav: Path, *, loop: bool = True) -> Browser:
    executable = chromium_path()
    if executable is None:
        raise RuntimeError(f"no Chromium found: {SETUP_HINT}")
    return playwright.chromium.launch(
        executable_path=executable,
        args=[
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}{'' if loop else '%noloop'}",
            "--autoplay-policy=no-user-gesture-required",
        ],
    )


def room_noise(samples: int, seed: int = 0) -> np.ndarray:
    """A microphone's noise floor (-65 dBFS), as in the demo model's training data."""
    return (np.random.default_rng(seed).standard_normal(samples) * 10 ** (-65 / 20)).astype(np.float32)


def write_microphone_wav(parts: list[np.ndarray], out: Path, *, gap_s: float = 1.5) -> Path:
    """16 kHz mono PCM16: ``parts`` (16 kHz float32) separated and surrounded by ``gap_s`` of room noise."""
    gap = int(gap_s * 16_000)
    audio = [room_noise(gap, seed=0)]
    for i, part in enumerate(parts, start=1):
        audio += [part + room_noise(len(part), seed=i), room_noise(gap, seed=100 + i)]
    sf.write(out, np.concatenate(audio), 16_000, subtype="PCM_16")
    return out
