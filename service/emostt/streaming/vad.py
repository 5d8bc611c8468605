"""Silero VAD (weights ship inside the ``silero-vad`` package): speech probability per 32 ms frame.

Each session owns a ``StreamVad`` (the model keeps recurrent state between frames). All VAD
compute runs on one shared worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from emostt.observability import metrics
from emostt.streaming.segmenter import FRAME_SAMPLES

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emostt-vad")


def _init_thread() -> None:
    import torch

    torch.set_num_threads(1)


_executor.submit(_init_thread)


class StreamVad:
    def __init__(self) -> None:
        self._model: Any = None

    def _probs(self, frames: npt.NDArray[np.float32]) -> list[float]:
        import torch
        from silero_vad import load_silero_vad

        if self._model is None:
            self._model = load_silero_vad()
        with torch.inference_mode():
            return [float(self._model(torch.from_numpy(f), 16_000).item()) for f in frames]

    async def speech_probs(self, frames: npt.NDArray[np.float32]) -> list[float]:
        """Probabilities for consecutive frames, shape (n, FRAME_SAMPLES)."""
        assert frames.ndim == 2 and frames.shape[1] == FRAME_SAMPLES
        started = time.perf_counter()
        probs = await asyncio.get_running_loop().run_in_executor(_executor, self._probs, frames)
        metrics.VAD_SECONDS.observe(time.perf_counter() - started)
        return probs
