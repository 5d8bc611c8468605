"""Audio in: PCM16 conversion, file reading, chunking. Pure functions, no I/O but the file read.

PCM WAV files (8/16/24/32-bit integer) are read with the standard library's ``wave`` module;
anything else (FLAC, OGG, float WAV, ...) needs ``soundfile`` (``pip install emostt-client[files]``).
"""

from __future__ import annotations

import importlib
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostt_client.errors import MissingDependencyError
from emostt_client.protocol import SAMPLE_RATES

__all__ = ["SUPPORTED_RATES", "AudioInput", "read_audio", "resample", "to_pcm16"]

# Sample rates the server accepts; others are resampled client-side.
SUPPORTED_RATES = frozenset(SAMPLE_RATES)

FloatArray = npt.NDArray[np.float32]
AudioInput = bytes | bytearray | memoryview | npt.NDArray[Any]


def to_pcm16(audio: AudioInput) -> bytes:
    """PCM s16le bytes from bytes (passed through) or a numpy array: int16 as is, float in
    [-1, 1] scaled (and clipped); a 2-D ``(frames, channels)`` array is mixed down to mono."""
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return bytes(audio)
    if not isinstance(audio, np.ndarray):
        raise TypeError(f"audio must be bytes or a numpy array, not {type(audio).__name__}")
    array: npt.NDArray[Any] = audio
    if array.ndim == 2:
        if array.dtype == np.int16:
            array = np.round(array.astype(np.float64).mean(axis=1)).astype(np.int16)
        else:
            array = array.mean(axis=1)
    if array.ndim != 1:
        raise ValueError(f"audio must be mono samples or (frames, channels), got shape {array.shape}")
    if array.dtype == np.int16:
        return array.astype("<i2", copy=False).tobytes()
    if np.issubdtype(array.dtype, np.floating):
        scaled: npt.NDArray[np.int16] = (np.clip(array, -1.0, 32767 / 32768) * 32768).astype("<i2")
        return scaled.tobytes()
    raise TypeError(f"audio arrays must be int16 or float, not {array.dtype}")


def read_audio(path: str | Path) -> tuple[FloatArray, int]:
    """A file's audio as float32 mono in [-1, 1] and its sample rate."""
    try:
        return _read_wav(Path(path))
    except (wave.Error, EOFError):
        pass  # not a PCM WAV file: soundfile reads everything else
    try:
        soundfile: Any = importlib.import_module("soundfile")
    except ImportError:
        raise MissingDependencyError(
            f"{path}: only PCM WAV files can be read without soundfile; "
            "install it with: pip install 'emostt-client[files]'"
        ) from None
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.mean(axis=1), dtype=np.float32), int(rate)


def _read_wav(path: Path) -> tuple[FloatArray, int]:
    with wave.open(str(path), "rb") as wav:
        channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
        frames = wav.readframes(wav.getnframes())
    if width == 1:  # unsigned 8-bit
        samples = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128) / 128
    elif width == 2:
        samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768
    elif width == 3:
        raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        samples = ints.astype(np.float32) / (1 << 23)
    elif width == 4:
        samples = (np.frombuffer(frames, dtype="<i4").astype(np.float64) / 2**31).astype(np.float32)
    else:
        raise wave.Error(f"unsupported sample width {width}")
    mono = samples.reshape(-1, channels).mean(axis=1) if channels > 1 else samples
    return np.ascontiguousarray(mono, dtype=np.float32), rate


def resample(audio: FloatArray, rate: int, target: int) -> FloatArray:
    """Linear-interpolation resampling: enough for speech recognition, not for listening. The
    client only uses it when the stream's rate cannot follow the file's (see ``send_file``)."""
    if rate == target or len(audio) == 0:
        return audio
    n_out = max(1, round(len(audio) * target / rate))
    positions = np.arange(n_out, dtype=np.float64) * (rate / target)
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)
