from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given
from hypothesis import strategies as st

from emostt.audio import pcm16_to_float32, read_audio_file, resample, to_mono
from emostt.errors import InvalidAudioError


@given(st.binary(max_size=400).filter(lambda b: len(b) % 2 == 0))
def test_pcm16_round_trips(data: bytes) -> None:
    samples = pcm16_to_float32(data)
    assert samples.dtype == np.float32 and np.all(np.abs(samples) <= 1.0)
    assert (samples * 32768).astype("<i2").tobytes() == data


def test_odd_byte_count_is_an_error() -> None:
    with pytest.raises(InvalidAudioError, match="even number of bytes"):
        pcm16_to_float32(b"\x00\x01\x02")


@pytest.mark.parametrize("rate", [8000, 22050, 24000, 44100, 48000])
def test_resample_keeps_duration_and_pitch(rate: int) -> None:
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = resample(tone, rate)
    assert abs(len(out) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16000 / len(out) - 440) < 2


def test_to_mono_averages_channels() -> None:
    stereo = np.stack([np.ones(10), -np.ones(10) * 0.5], axis=1)
    assert np.allclose(to_mono(stereo), 0.25)


def test_read_stereo_flac_at_44k(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    left = 0.5 * np.sin(2 * np.pi * 300 * t)
    sf.write(tmp_path / "a.flac", np.stack([left, left], axis=1), 44100)
    audio = read_audio_file(tmp_path / "a.flac")
    assert audio.dtype == np.float32 and abs(len(audio) - 16000) <= 1
    assert np.max(np.abs(audio)) == pytest.approx(0.5, abs=0.02)


def test_unreadable_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "x.wav").write_bytes(b"RIFF garbage")
    with pytest.raises(InvalidAudioError, match="cannot read audio file"):
        read_audio_file(tmp_path / "x.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0), 16000)
    with pytest.raises(InvalidAudioError, match="no samples"):
        read_audio_file(tmp_path / "empty.wav")
