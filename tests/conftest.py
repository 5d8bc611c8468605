"""Shared fixtures: generated model dirs and real speech from espeak-ng."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from emostt.audio import read_audio_file

# "ci" replays the same examples on every run, so a red build always means a code change;
# "stress" searches much further (run it after touching the segmenter, collate or batcher).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("stress", max_examples=3000, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from emostt.inference.modeldir import SIZES, write_model_dir

    # No dither: funasr's reference path dithers with fresh random noise, so parity needs none.
    return write_model_dir(tmp_path_factory.mktemp("models") / "tiny", SIZES["tiny"], seed=0, dither=0.0)


@pytest.fixture(scope="session")
def demo_engine():  # type: ignore[no-untyped-def]
    """The bundled demo model (torch fp32: no state changes while serving), loaded once for the run."""
    from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine

    return SenseVoiceEngine.load("demo", EngineOptions(device="cpu", precision="fp32"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine

    return SenseVoiceEngine.load(str(tiny_model_dir), EngineOptions(device="cpu", precision="fp32"))


def espeak(text: str, out: Path, voice: str = "en", speed: int = 160) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is required for speech tests (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(out), text], check=True)
    return out


@pytest.fixture(scope="session")
def speech_16k(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    path = espeak("turn left and stop at the door", tmp_path_factory.mktemp("speech") / "s.wav")
    return read_audio_file(path)


def noise_utterances(lengths_s: list[float], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(int(s * 16000)) * 0.1).astype(np.float32) for s in lengths_s]


@pytest.fixture(scope="session")
def speech_with_pauses(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Three phrases separated by a second of silence, with silence around them: 16 kHz float32."""
    folder = tmp_path_factory.mktemp("phrases")
    silence = np.zeros(16_000, dtype=np.float32)
    parts = [silence[:8000]]
    for i, phrase in enumerate(["turn left", "what time is it", "open the door please"]):
        parts += [read_audio_file(espeak(phrase, folder / f"{i}.wav")) * 0.8, silence]
    return np.concatenate(parts)
