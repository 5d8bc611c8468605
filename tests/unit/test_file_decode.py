"""Uploaded files to 16 kHz mono float32, block by block: formats, rates, channels, limits."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emostt.audio import read_audio_file, resample
from emostt.errors import InvalidAudioError
from emostt.files.decode import BLOCK_S, AudioTooLongError, decode_audio

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"


def encoded(audio: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> io.BytesIO:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=fmt, subtype=subtype)
    buffer.seek(0)
    return buffer


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("WAV", "PCM_16"), ("FLAC", None), ("OGG", "VORBIS"), ("MP3", None)]
)
def test_formats_decode_to_16k_mono(fmt: str, subtype: str | None) -> None:
    audio = decode_audio(encoded(tone(1.0, 48_000, channels=2), 48_000, fmt, subtype), max_seconds=10)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16_000) <= 1200  # lossy codecs pad a little
    assert 0.15 < np.sqrt(np.mean(audio**2)) < 0.25  # the tone's RMS (0.3 / sqrt 2), mixed to mono


def test_blocks_give_what_decoding_at_once_gives() -> None:
    audio = tone(BLOCK_S * 2.5, 44_100)
    decoded = decode_audio(encoded(audio, 44_100, "WAV", "FLOAT"), max_seconds=60)
    whole = resample(audio, 44_100)
    assert len(decoded) == len(whole)
    assert np.max(np.abs(decoded - whole)) < 1e-3  # soxr's streaming and one-shot filters agree


def test_the_sample_files_decode_as_the_cli_reads_them() -> None:
    for name in ("turn_left.wav", "what_time_is_it_48k_stereo.flac"):
        path = SAMPLES / name
        with path.open("rb") as file:
            assert np.array_equal(decode_audio(file, 60), read_audio_file(path))


@pytest.mark.parametrize("data", [b"", b"not audio at all" * 20, b"RIFF" + b"\0" * 64])
def test_what_is_not_audio_is_invalid_audio(data: bytes) -> None:
    with pytest.raises(InvalidAudioError, match="could not be decoded"):
        decode_audio(io.BytesIO(data), 10)


def test_too_long_and_empty_files_are_refused() -> None:
    with pytest.raises(AudioTooLongError, match="at most 2 s"):
        decode_audio(encoded(tone(3.0, 16_000), 16_000, "WAV"), max_seconds=2)
    with pytest.raises(InvalidAudioError, match="no audio samples"):
        decode_audio(encoded(np.zeros(0, dtype=np.float32), 16_000, "WAV"), max_seconds=2)
