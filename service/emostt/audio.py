"""PCM conversion, resampling and audio-file reading. numpy/soxr/soundfile only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from emostt.errors import InvalidAudioError
from emostt.vocabulary import SAMPLE_RATE

Float32Array = npt.NDArray[np.float32]


def pcm16_to_float32(data: bytes) -> Float32Array:
    """Little-endian signed 16-bit PCM bytes to float32 in [-1, 1). ``len(data)`` must be even."""
    if len(data) % 2:
        raise InvalidAudioError(f"PCM16 needs an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def resample(samples: Float32Array, rate: int, target: int = SAMPLE_RATE) -> Float32Array:
    if rate == target:
        return samples
    return soxr.resample(samples, rate, target, quality="HQ").astype(np.float32, copy=False)


def to_mono(samples: npt.NDArray[np.floating]) -> Float32Array:
    """(n,) or (n, channels) to (n,) by averaging channels."""
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    return np.ascontiguousarray(samples, dtype=np.float32)


def read_audio_file(path: Path) -> Float32Array:
    """Any soundfile-readable file (WAV, FLAC, OGG...), any rate and channel count, to 16 kHz mono."""
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise InvalidAudioError(f"cannot read audio file {str(path)!r}: {exc}") from exc
    mono = to_mono(samples)
    if mono.size == 0:
        raise InvalidAudioError(f"audio file {str(path)!r} holds no samples")
    return resample(mono, int(rate))
