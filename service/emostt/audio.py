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


def _g711_tables() -> tuple[Float32Array, Float32Array]:
    """The 256 linear values of G.711 µ-law and A-law codes (ITU-T G.711; the expansion of the
    reference implementation, Sun's g711.c), as float32 in [-1, 1).

    Written here because it is two 256-entry tables: the stdlib's ``audioop`` is deprecated and
    gone from Python 3.13, and no maintained numpy package does only this. tests/unit/test_g711.py
    checks both tables against sox's own decoder."""
    codes = np.arange(256)
    # µ-law: invert, then the segment (bits 4-6) shifts the 4-bit mantissa plus the bias.
    u = ~codes & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    mulaw = np.where(u & 0x80, 0x84 - t, t - 0x84)
    # A-law: even bits inverted; segment 0 is linear, others double per segment.
    a = codes ^ 0x55
    seg = (a & 0x70) >> 4
    t = ((a & 0x0F) << 4) + np.where(seg == 0, 8, 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    alaw = np.where(a & 0x80, t, -t)
    return (mulaw / 32768.0).astype(np.float32), (alaw / 32768.0).astype(np.float32)


MULAW, ALAW = _g711_tables()


def decode_samples(data: bytes, encoding: str) -> Float32Array:
    """A whole number of samples (``BYTES_PER_SAMPLE[encoding]`` bytes each) to float32."""
    if encoding == "pcm16":
        return pcm16_to_float32(data)
    table = MULAW if encoding == "mulaw" else ALAW
    return table[np.frombuffer(data, dtype=np.uint8)]


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
