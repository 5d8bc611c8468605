"""Client audio to model frames: PCM16 or G.711 (µ-law, A-law) bytes at the session rate in,
32 ms float32 frames at 16 kHz out.

Pure and per session (no I/O, no threads). A byte count that splits a sample carries the rest
over to the next chunk; samples that do not fill a frame wait for the next chunk.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from emostt.audio import decode_samples
from emostt.vocabulary import BYTES_PER_SAMPLE, SAMPLE_RATE, VAD_FRAME_SAMPLES

Frames = npt.NDArray[np.float32]  # shape (n, VAD_FRAME_SAMPLES)


class Framer:
    def __init__(self, sample_rate: int = SAMPLE_RATE, encoding: str = "pcm16") -> None:
        self.sample_rate = sample_rate
        self.encoding = encoding
        self._resampler = _resampler(sample_rate)
        self._odd_byte = b""
        self._pending = np.zeros(0, dtype=np.float32)

    def set_format(self, sample_rate: int, encoding: str) -> None:
        """Only before the first audio: a stream's resampler state cannot change rate mid-way."""
        self.sample_rate = sample_rate
        self.encoding = encoding
        self._resampler = _resampler(sample_rate)

    def push(self, pcm: bytes) -> Frames:
        """The whole frames that ``pcm`` completes (possibly none)."""
        data = self._odd_byte + pcm
        cut = len(data) - len(data) % BYTES_PER_SAMPLE[self.encoding]
        self._odd_byte = data[cut:]
        samples = decode_samples(data[:cut], self.encoding)
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
