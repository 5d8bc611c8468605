"""Silero VAD's ONNX model (shipped inside the ``silero-vad`` package): one batched step.

The ONNX build takes its recurrent state as an input, so frames of many streams run as one
batch while each stream keeps its own state (``VadStream``). Batching across sessions and the
thread that calls this live in ``streaming/vad.py``; this module only owns the runtime.

Concurrency: one thread (the VAD thread) calls ``step``; a stream is updated by that call only.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostt.inference.ort_session import CPU_PROVIDERS, session_options
from emostt.vocabulary import SAMPLE_RATE, VAD_FRAME_SAMPLES

CONTEXT_SAMPLES = 64  # Silero VAD at 16 kHz sees the previous 64 samples with each frame
STATE_SHAPE = (2, 1, 128)

FloatArray = npt.NDArray[np.float32]


def model_path() -> Path:
    """The ONNX file inside the installed ``silero-vad`` package, found without importing it (its
    ``__init__`` imports torch, which the torch-free CPU server never loads)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the silero-vad package is not installed")
    return Path(spec.origin).resolve().parent / "data" / "silero_vad.onnx"


@dataclass
class VadStream:
    """One session's recurrent state."""

    state: FloatArray = field(default_factory=lambda: np.zeros(STATE_SHAPE, dtype=np.float32))
    context: FloatArray = field(default_factory=lambda: np.zeros(CONTEXT_SAMPLES, dtype=np.float32))


class SileroVad:
    """The ONNX Runtime session of Silero VAD, one intra-op thread (the VAD thread's own)."""

    def __init__(self) -> None:
        import onnxruntime as ort

        self._session: Any = ort.InferenceSession(
            str(model_path()), sess_options=session_options(1), providers=CPU_PROVIDERS
        )

    def step(self, streams: list[VadStream], frames: FloatArray) -> FloatArray:
        """One frame per stream: (B, VAD_FRAME_SAMPLES) -> (B,) probabilities; updates each stream."""
        assert frames.ndim == 2 and frames.shape[1] == VAD_FRAME_SAMPLES
        contexts = np.stack([s.context for s in streams])
        states = np.concatenate([s.state for s in streams], axis=1)
        out, new_states = self._session.run(
            None,
            {
                "input": np.concatenate((contexts, frames), axis=1),
                "state": states,
                "sr": np.array(SAMPLE_RATE, dtype=np.int64),
            },
        )
        for i, stream in enumerate(streams):
            stream.state = np.ascontiguousarray(new_states[:, i : i + 1])
            stream.context = frames[i, -CONTEXT_SAMPLES:].copy()
        return np.asarray(out[:, 0], dtype=np.float32)
