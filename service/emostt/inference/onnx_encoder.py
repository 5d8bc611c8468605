"""The CPU encoder pass on ONNX Runtime, int8, from funasr's export of the model.

The export and its cache are ``onnx_cache.py`` (and ``onnx_export.py`` for a server, which
exports in a child process); this module runs the exported graph, numpy in and out, so the
torch-free engine (``onnx_engine.py``) and the torch engine's ``OnnxPass`` share it.

Concurrency: ``OnnxEncoder.run`` may be called from several threads at once (ONNX Runtime
sessions are thread-safe).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from emostt.errors import ModelLoadError
from emostt.inference.ort_session import CPU_PROVIDERS, session_options


class OnnxEncoder:
    """Query frames + encoder + CTC projection in one ONNX Runtime session.

    ``run`` may be called from several model workers at once (ONNX Runtime sessions are
    thread-safe); with one intra-op thread each call runs on its caller's thread.
    """

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        try:
            self._session = ort.InferenceSession(str(path), session_options(threads), providers=CPU_PROVIDERS)
        except Exception as exc:
            raise ModelLoadError(f"cannot load ONNX encoder {path}: {exc}") from exc
        self.path = path

    def run(
        self, feats: np.ndarray, lengths: np.ndarray, language: np.ndarray, text_norm: np.ndarray
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]:
        """CTC logits (B, T+4, V) and their valid lengths, like the torch encoder pass: ``feats``
        (B, T, D) padded features, ``lengths`` (B,), the language and text-norm query indices (B,)."""
        logits, out_lens = self._session.run(
            None,
            {
                "speech": feats.astype(np.float32, copy=False),
                "speech_lengths": lengths.astype(np.int32, copy=False),
                "language": language.astype(np.int32, copy=False),
                "textnorm": text_norm.astype(np.int32, copy=False),
            },
        )
        return logits, out_lens
