"""Client PCM to model frames: PCM16 bytes at the session rate in, 32 ms float32 frames at 16 kHz out.

Pure and per session (no I/O, no threads). An odd byte count carries its last byte over to
the next chunk; samples that do not fill a frame wait for the next chunk.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from emostt.audio import pcm16_to_float32
from emostt.vocabulary import SAMPLE_RATE, VAD_FRAME_SAMPLES

Frames = npt.NDArray[np.float32]  # shape (n, VAD_FRAME_SAMPLES)


class Framer:
    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self.sample_rate = sample_rate
        self._resampler = _resampler(sample_rate)
        self._odd_byte = b""
        self._pending = np.zeros(0, dtype=np.float32)

    def set_rate(self, sample_rate: int) -> None:
        """Only before the first audio: a stream's resampler state cannot change rate mid-way."""
        self.sample_rate = sample_rate
        self._resampler = _resampler(sample_rate)

    def push(self, pcm: bytes) -> Frames:
        """The whole frames that ``pcm`` completes (possibly none)."""
        data = self._odd_byte + pcm
        cut = len(data) - len(data) % 2
        self._odd_byte = data[cut:]
        samples = pcm16_to_float32(data[:cut])
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        self._pending = np.concatenate((self._pending, samples)) if self._pending.size else samples
        n_frames = len(self._pending) // VAD_FRAME_SAMPLES
        frames = self._pending[: n_frames * VAD_FRAME_SAMPLES].reshape(n_frames, VAD_FRAME_SAMPLES).copy()
        self._pending = self._pending[n_frames * VAD_FRAME_SAMPLES :]
        return frames


def _resampler(rate: int) -> soxr.ResampleStream | None:
    if rate == SAMPLE_RATE:
        return None
    return soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
