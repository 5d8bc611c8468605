"""The clips of tools/bench_peers.py: 16 espeak-ng clips of exactly 2 s and 16 of exactly 10 s.

English sentences in eight voices (espeak-ng's own variants), resampled to 16 kHz, cut or
padded to length, with a faint fixed noise floor (1e-4) so no engine sees digital silence (the
engines run without dither). Saved as float32 arrays ``s2`` (16, 32000) and ``s10`` (16,
160000) in one .npz that every engine process loads.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from emostt.audio import read_audio_file

RATE = 16_000
CLIPS = 16
SENTENCES = (
    "turn left at the next corner",
    "what time does the train leave",
    "please open the window",
    "the weather is lovely today",
    "call me when you get home",
    "I would like a cup of tea",
    "where did you put the keys",
    "the meeting starts at nine",
    "can you hear me now",
    "let us go for a walk",
    "the shop closes early on sunday",
    "bring the blue folder please",
    "she reads a book every week",
    "how far is the station",
    "the children are playing outside",
    "thank you for your help",
)
VOICES = ("en-us", "en", "en-us+m3", "en+f3", "en-us+m7", "en+f2", "en-us+klatt", "en+m1")
GAP_S = 0.3
NOISE = 1e-4


def speak(text: str, voice: str, folder: Path) -> np.ndarray:
    path = folder / "clip.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(path), text], check=True)
    return read_audio_file(path)


def fit(audio: np.ndarray, seconds: int, seed: int) -> np.ndarray:
    n = seconds * RATE
    out = np.zeros(n, dtype=np.float32)
    out[: min(n, len(audio))] = audio[:n]
    noise = np.random.default_rng(seed).standard_normal(n).astype(np.float32) * np.float32(NOISE)
    return out + noise


def make_clips(path: Path) -> dict[str, np.ndarray]:
    """The clips, made once (kept at ``path``) and loaded from there afterwards."""
    if path.is_file():
        return dict(np.load(path))
    gap = np.zeros(int(GAP_S * RATE), dtype=np.float32)
    short, long = [], []
    with tempfile.TemporaryDirectory() as tmp:
        spoken = [speak(s, VOICES[i % len(VOICES)], Path(tmp)) for i, s in enumerate(SENTENCES)]
    for i in range(CLIPS):
        short.append(fit(spoken[i], 2, seed=i))
        parts: list[np.ndarray] = []
        j = i
        while sum(len(p) for p in parts) < 10 * RATE:
            parts += [spoken[j % len(spoken)], gap]
            j += 1
        long.append(fit(np.concatenate(parts), 10, seed=100 + i))
    clips = {"s2": np.stack(short), "s10": np.stack(long)}
    np.savez(path, **clips)
    return clips
