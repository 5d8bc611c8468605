"""The turn model's input: Whisper's 80-bin log-mel of a turn's last 8 s, in numpy.

Smart Turn v3 was trained on ``transformers.WhisperFeatureExtractor(chunk_length=8)`` features;
Pipecat computes the same with a numpy copy (``pipecat/audio/turn/smart_turn/_whisper_features``).
This is emostt's own implementation of that math, step for step, so the probabilities match
Pipecat's ``LocalSmartTurnAnalyzerV3`` (tests/unit/test_smart_turn.py) without importing pipecat
or transformers at serve time:

1. the window: the last 8 s (128,000 samples at 16 kHz), zero-padded at the front when shorter;
2. zero-mean, unit-variance normalisation of that whole window, in float32 (the padding included);
3. a centred STFT (reflect padding, periodic Hann window of 400, hop 160) in float64, power;
4. a Slaney-scale, Slaney-normalised 80-filter mel bank over 0-8 kHz, floored at 1e-10, log10;
5. the last frame dropped (800 frames), values clamped to 8 below the clip's maximum, (x + 4) / 4.

Pure functions over arrays (the filter bank is built once at import): safe from any thread.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from emostt.vocabulary import SAMPLE_RATE

WINDOW_SECONDS = 8
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE  # 128,000
N_FFT = 400
HOP = 160
N_MELS = 80
FRAMES = WINDOW_SAMPLES // HOP  # 800
_NORM_EPS = 1e-7
_MEL_FLOOR = 1e-10

FloatArray = npt.NDArray[np.float32]


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's scale: linear to 1 kHz (3 mels per 200 Hz), logarithmic above."""
    mel = 3.0 * hz / 200.0
    log_region = hz >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * (27.0 / np.log(6.4)), mel)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    hz = 200.0 * mel / 3.0
    log_region = mel >= 15.0
    return np.where(log_region, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), hz)


def _mel_filters() -> npt.NDArray[np.float64]:
    """(N_FFT // 2 + 1, N_MELS): triangles between mel-spaced edges, each scaled to unit area."""
    edges_mel = np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(SAMPLE_RATE / 2)), N_MELS + 2)
    edges = _mel_to_hz(edges_mel)
    bins = np.linspace(0, SAMPLE_RATE // 2, N_FFT // 2 + 1)
    slopes = edges[np.newaxis, :] - bins[:, np.newaxis]
    widths = np.diff(edges)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges[2:] - edges[:-2]))[np.newaxis, :]


_FILTERS = _mel_filters()
_HANN = np.hanning(N_FFT + 1)[:-1]  # periodic, as torch.hann_window


def turn_window(audio: FloatArray) -> FloatArray:
    """The model's view of a turn: its last 8 s, zero-padded at the front when shorter."""
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) >= WINDOW_SAMPLES:
        return audio[-WINDOW_SAMPLES:]
    return np.concatenate((np.zeros(WINDOW_SAMPLES - len(audio), dtype=np.float32), audio))


def turn_features(audio: FloatArray) -> FloatArray:
    """(N_MELS, FRAMES) float32 features of one turn (16 kHz mono float32, any length)."""
    x = turn_window(audio)
    # float32, as the reference normalises its padded float32 buffer before the STFT promotes.
    x = (x - x.mean()) / np.sqrt(x.var() + _NORM_EPS)
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = sliding_window_view(padded, N_FFT)[::HOP]  # (FRAMES + 1, N_FFT), a view
    power = np.abs(np.fft.rfft(frames * _HANN, axis=-1)) ** 2  # (FRAMES + 1, N_FFT // 2 + 1)
    log_mel = np.log10(np.maximum(_MEL_FLOOR, _FILTERS.T @ power.T))[:, :-1]
    log_mel = np.maximum(log_mel, log_mel.max() - 8.0)
    return ((log_mel + 4.0) / 4.0).astype(np.float32)


def turn_feature_batch(audios: list[FloatArray]) -> FloatArray:
    """(len(audios), N_MELS, FRAMES): the model's ``input_features``."""
    return np.stack([turn_features(a) for a in audios])
