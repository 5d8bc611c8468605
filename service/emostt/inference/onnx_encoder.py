"""The CPU encoder pass on ONNX Runtime, int8, from funasr's export of the model.

The export and its cache are ``onnx_cache.py`` (and ``onnx_export.py`` for a server, which
exports in a child process); this module runs the exported graph, numpy in and out, so the
torch-free engine (``onnx_engine.py``) and the torch engine's ``OnnxPass`` share it.

Concurrency: ``OnnxEncoder.run`` may be called from several threads at once (ONNX Runtime
sessions are thread-safe).

With ``threads.lone_call``, a second (wide) session of that many spinning threads runs the calls the
batcher marks as alone (``lone_call.py``): an idle server gives a lone utterance every core,
while under load each worker keeps its own one-thread calls. It costs one more copy of the
weights in memory (~250 MiB for the full-size model; docs/engine.md, "CPU threads").

The graph's int8 weights are signed (``int8_weights.py``); on an x86 CPU without VNNI they are
shifted to unsigned as the sessions are made, which gives the same results exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostt.errors import ModelLoadError
from emostt.inference.int8_weights import signed_weights_exact, unsigned_weights
from emostt.inference.lone_call import is_lone_call, widen_this_call
from emostt.inference.ort_session import CPU_PROVIDERS, EncoderThreads, session_options

log = logging.getLogger(__name__)


class OnnxEncoder:
    """Query frames + encoder + CTC projection in one ONNX Runtime session.

    ``run`` may be called from several model workers at once (ONNX Runtime sessions are
    thread-safe); with one intra-op thread each call runs on its caller's thread.
    """

    def __init__(self, path: Path, threads: EncoderThreads) -> None:
        import onnxruntime as ort

        try:
            graph: str | bytes = str(path)
            if not signed_weights_exact():
                log.info(
                    "this CPU has no VNNI: the encoder's signed int8 weights are shifted to unsigned "
                    "(the same results; unsigned kernels' speed)",
                    extra={"graph": str(path)},
                )
                graph = unsigned_weights(path)
            self._session = ort.InferenceSession(
                graph, session_options(threads.per_call), providers=CPU_PROVIDERS
            )
            self._wide = (
                ort.InferenceSession(
                    graph, session_options(threads.lone_call, spinning=True), providers=CPU_PROVIDERS
                )
                if threads.lone_call
                else None
            )
            del graph  # the serialized copy, where one was made: the sessions hold their own
        except Exception as exc:
            raise ModelLoadError(f"cannot load ONNX encoder {path}: {exc}") from exc
        self.path = path
        self.threads = threads

    def session_for_this_call(self) -> Any:
        """The wide session for a call that runs alone (when there is one; the call is then recorded
        as widened, ``lone_call.widen_this_call``), else the shared one."""
        if self._wide is not None and is_lone_call():
            widen_this_call()
            return self._wide
        return self._session

    def run(
        self, feats: np.ndarray, lengths: np.ndarray, language: np.ndarray, text_norm: np.ndarray
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]:
        """CTC logits (B, T+4, V) and their valid lengths, like the torch encoder pass: ``feats``
        (B, T, D) padded features, ``lengths`` (B,), the language and text-norm query indices (B,)."""
        logits, out_lens = self.session_for_this_call().run(
            None,
            {
                "speech": feats.astype(np.float32, copy=False),
                "speech_lengths": lengths.astype(np.int32, copy=False),
                "language": language.astype(np.int32, copy=False),
                "textnorm": text_norm.astype(np.int32, copy=False),
            },
        )
        return logits, out_lens
