"""Uploaded files to 16 kHz mono float32, decoded as a stream: formats, rates, channels, unknown
lengths, the length and amplification bounds, the memory budget."""

from __future__ import annotations

import io
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from emostt.audio import read_audio_file, resample
from emostt.errors import InvalidAudioError
from emostt.files.decode import (
    BLOCK_S,
    FREE_S,
    MAX_RATE,
    MIN_BYTES_PER_S,
    MIN_RATE,
    UNKNOWN_FRAMES,
    AudioTooCompressedError,
    AudioTooLongError,
    UnsupportedSampleRateError,
    allowed_seconds,
    decode_audio,
)
from emostt.files.memory import FileMemoryFullError, MemoryBudget

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


# --- streamed decoding: unknown lengths, amplification, rates, the memory budget -------------


def unknown_length(flac: bytes) -> bytes:
    """The FLAC a piped encoder writes: STREAMINFO's total samples (and MD5) 0, "unknown"."""
    data = bytearray(flac)
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0, "STREAMINFO first"
    word = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = word.to_bytes(8, "big")
    data[26:42] = bytes(16)
    return bytes(data)


def flac_bytes(audio: np.ndarray, rate: int) -> bytes:
    return encoded(audio, rate, "FLAC").getvalue()


def dither(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A quiet microphone's noise floor (1 LSB): FLAC needs ~1.5 bits a sample for it."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1, 2, size=int(seconds * rate), dtype=np.int16)


def test_an_unknown_length_flac_decodes_like_the_same_flac_with_its_length() -> None:
    audio = tone(12.5, 44_100, channels=2)
    known = flac_bytes(audio, 44_100)
    piped = unknown_length(known)
    assert sf.info(io.BytesIO(piped)).frames == UNKNOWN_FRAMES  # libsndfile's "unknown"
    expected = decode_audio(io.BytesIO(known), 60)
    assert np.array_equal(decode_audio(io.BytesIO(piped), 60), expected)
    assert len(expected) == round(12.5 * 16_000)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox makes the piped FLAC")
def test_a_flac_written_to_a_pipe_by_sox_decodes(tmp_path: Path) -> None:
    raw = subprocess.run(
        ["sox", str(SAMPLES / "turn_left.wav"), "-t", "raw", "-"], check=True, capture_output=True
    ).stdout
    piped = subprocess.run(
        ["sox", "-t", "raw", "-r", "16000", "-e", "signed", "-b", "16", "-c", "1", "-", "-t", "flac", "-"],
        input=raw,
        check=True,
        capture_output=True,
    ).stdout
    assert sf.info(io.BytesIO(piped)).frames == UNKNOWN_FRAMES
    with (SAMPLES / "turn_left.wav").open("rb") as wav:
        assert np.array_equal(decode_audio(io.BytesIO(piped), 60), decode_audio(wav, 60))


def test_a_long_unknown_length_file_is_cut_while_decoding() -> None:
    budget = MemoryBudget(1 << 30)
    piped = unknown_length(flac_bytes(dither(40.0, 16_000), 16_000))
    with pytest.raises(AudioTooLongError, match=r"at least 30 s .* at most 25 s"):
        decode_audio(io.BytesIO(piped), max_seconds=25, budget=budget)
    # Decoding stopped at the first block past the limit, and what it held was given back.
    assert budget.peak == 2 * BLOCK_S * 16_000 * 4
    assert budget.held == 0


def test_a_stated_length_over_the_limit_is_refused_before_decoding() -> None:
    budget = MemoryBudget(1 << 30)
    with pytest.raises(AudioTooLongError, match="the audio is 40 s long"):
        decode_audio(io.BytesIO(flac_bytes(dither(40.0, 16_000), 16_000)), max_seconds=5, budget=budget)
    assert budget.peak == 0


@pytest.mark.parametrize("piped", [False, True])
def test_digital_silence_cannot_amplify_a_small_upload(piped: bool) -> None:
    silence = flac_bytes(np.zeros(10 * 60 * 16_000, dtype=np.int16), 16_000)  # 10 min in ~28 KB
    assert len(silence) < 60 * MIN_BYTES_PER_S * 10
    budget = MemoryBudget(1 << 30)
    data = unknown_length(silence) if piped else silence
    with pytest.raises(AudioTooCompressedError, match=f"1 s per {MIN_BYTES_PER_S} bytes"):
        decode_audio(io.BytesIO(data), max_seconds=3600, budget=budget)
    bound = allowed_seconds(len(data), 3600)
    assert budget.peak <= (bound + BLOCK_S) * 16_000 * 4  # stopped at the bound, not at 10 min
    assert budget.held == 0


def test_real_recordings_are_far_from_the_amplification_bound() -> None:
    # A microphone's noise floor at the lowest rate, and speech at the lowest Opus bitrate.
    assert len(flac_bytes(dither(10.0, 8_000), 8_000)) / 10 > 10 * MIN_BYTES_PER_S
    speech = read_audio_file(SAMPLES / "turn_left.wav")
    opus = encoded(speech, 16_000, "OGG", "OPUS")  # libsndfile's default Opus bitrate
    assert len(opus.getvalue()) / (len(speech) / 16_000) > 5 * MIN_BYTES_PER_S
    assert len(decode_audio(io.BytesIO(flac_bytes(dither(600.0, 8_000), 8_000)), 3600)) == 600 * 16_000
    short_silence = flac_bytes(np.zeros(int(FREE_S * 16_000), dtype=np.int16), 16_000)
    assert len(decode_audio(io.BytesIO(short_silence), 3600)) == FREE_S * 16_000


@given(
    size=st.integers(0, 10**9),
    more=st.integers(0, 10**6),
    max_seconds=st.floats(1, 86_400, allow_nan=False),
)
def test_the_amplification_bound_grows_with_the_upload_and_never_passes_max_seconds(
    size: int, more: int, max_seconds: float
) -> None:
    allowed = allowed_seconds(size, max_seconds)
    assert min(FREE_S, max_seconds) <= allowed <= max_seconds
    assert allowed_seconds(size + more, max_seconds) >= allowed
    assert allowed <= max(FREE_S, size / MIN_BYTES_PER_S)
    assert allowed_seconds(None, max_seconds) == max_seconds


@pytest.mark.parametrize("rate", [1, 100, 4_000, 7_999, 400_000])
def test_rates_outside_8_to_384_khz_are_refused(rate: int) -> None:
    wav = encoded(np.zeros(2_000, dtype=np.int16), rate, "WAV")  # 2 KB; at 1 Hz, 2,000 s
    with pytest.raises(UnsupportedSampleRateError, match=f"{rate} Hz"):
        decode_audio(wav, 3600)


@pytest.mark.parametrize("rate", [MIN_RATE, 22_050, MAX_RATE])
def test_rates_at_the_bounds_decode(rate: int) -> None:
    assert abs(len(decode_audio(encoded(tone(1.0, rate), rate, "WAV"), 10)) - 16_000) <= 1


def test_many_channels_are_read_in_bounded_blocks_and_mixed_down() -> None:
    channels = 40  # READ_SAMPLES // 40 frames a read: several reads for 30 s at 48 kHz
    audio = tone(30.0, 48_000, channels=channels)
    audio[:, 1::2] = 0  # half the channels silent: the mix is half the tone
    decoded = decode_audio(encoded(audio, 48_000, "WAV", "FLOAT"), 60)
    assert len(decoded) == 30 * 16_000
    half = (audio[:, 0] / 2).astype(np.float32)
    assert np.max(np.abs(decoded - resample(half, 48_000))) < 1e-3


def test_the_decoded_audio_holds_the_budget_until_its_last_view_is_freed() -> None:
    budget = MemoryBudget(1 << 30)
    audio = decode_audio(encoded(tone(3.0, 16_000), 16_000, "WAV"), 10, budget=budget)
    assert budget.held == len(audio) * 4
    segment = audio[1000:2000]  # the segments' slices of it
    del audio
    assert budget.held == 48_000 * 4
    del segment
    assert budget.held == 0


def test_a_file_over_the_memory_budget_is_refused_and_gives_back_what_it_took() -> None:
    budget = MemoryBudget(20 * 16_000 * 4)  # 20 s of 16 kHz audio
    first = decode_audio(encoded(tone(15.0, 16_000), 16_000, "WAV"), 60, budget=budget)
    with pytest.raises(FileMemoryFullError, match="retry later") as refused:
        decode_audio(encoded(tone(15.0, 16_000), 16_000, "WAV"), 60, budget=budget)
    assert refused.value.retryable and refused.value.code == "overloaded"
    assert budget.held == len(first) * 4
    del first
    assert len(decode_audio(encoded(tone(15.0, 16_000), 16_000, "WAV"), 60, budget=budget)) == 15 * 16_000


def test_the_budget_is_shared_safely_by_threads() -> None:
    budget = MemoryBudget(1000)
    over = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(2000):
            n = int(rng.integers(1, 300))
            try:
                budget.reserve(n)
            except FileMemoryFullError:
                continue
            if budget.held > budget.limit_bytes:
                over.append(budget.held)
            budget.release(n)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert over == [] and budget.held == 0 and 0 < budget.peak <= 1000


@settings(max_examples=25, deadline=None)
@given(
    rate=st.sampled_from([8_000, 11_025, 16_000, 22_050, 44_100, 48_000, 96_000]),
    channels=st.integers(1, 3),
    seconds=st.floats(0.01, 25.0),
)
def test_unknown_length_never_changes_what_a_flac_decodes_to(
    rate: int, channels: int, seconds: float
) -> None:
    audio = (tone(seconds, rate, channels) * 32767).astype(np.int16)
    if len(audio) == 0:
        return
    known = flac_bytes(audio, rate)
    decoded = decode_audio(io.BytesIO(unknown_length(known)), 60)
    assert np.array_equal(decoded, decode_audio(io.BytesIO(known), 60))
    assert abs(len(decoded) - len(audio) * 16_000 / rate) <= 1


def test_a_file_the_whole_budget_could_not_hold_is_too_long_not_overloaded() -> None:
    budget = MemoryBudget(20 * 16_000 * 4)  # retrying would never help: a 400, not a 503
    with pytest.raises(AudioTooLongError, match="memory for files holds \\(20 s\\)"):
        decode_audio(encoded(tone(25.0, 16_000), 16_000, "WAV"), 60, budget=budget)
    assert budget.held == 0
