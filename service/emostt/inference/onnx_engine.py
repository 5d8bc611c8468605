"""The torch-free CPU engine: ONNX Runtime for the encoder, numpy for everything around it.

``SenseVoiceEngine`` loads funasr's model with torch even when ONNX Runtime runs its encoder:
features come from funasr's ``WavFrontend``, the reductions run on torch tensors, and the
tokenizer is funasr's. This engine serves the same model on the CPU without torch or funasr in
the process, from an ``OnnxModel`` (``onnx_model.py``: an exported dir, or a model dir whose
export is cached):

- features: ``fbank.NumpyFeatures`` (kaldi-native-fbank, LFR and CMVN in numpy), the same as
  ``features.py``'s;
- the encoder: the int8 graph on ONNX Runtime (``onnx_encoder.OnnxEncoder``, the one
  ``passes.OnnxPass`` runs), the language and text-norm queries per utterance;
- the reductions: numpy on the valid frames only (``ctc_batch.reduce_logits``), then the same
  ``ctc_batch.decode_batch`` as the torch engine (greedy CTC, or keyterm beam search);
- the tokenizer: sentencepiece itself (funasr's tokenizer wraps the same processor).

Which engine a server runs is ``serving.py``'s choice. Results equal the torch engine's on
the ONNX backend within 1e-5 (``tests/integration/test_torch_free_engine.py``).

Concurrency: ``transcribe`` may run in several threads at once (model workers): it keeps no
per-call state on the engine; ONNX Runtime sessions are thread-safe.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from emostt.errors import ModelLoadError
from emostt.inference.ctc_batch import decode_batch, reduce_logits
from emostt.inference.engine import ModelInfo, TranscriptionRequest, TranscriptionResult
from emostt.inference.fbank import NumpyFeatures, load_cmvn
from emostt.inference.keyterms import KeytermGraphs
from emostt.inference.onnx_encoder import OnnxEncoder
from emostt.inference.onnx_model import OnnxModel
from emostt.inference.ort_session import EncoderThreads
from emostt.inference.revision import SHORT_REVISION
from emostt.inference.rich_tokens import LANGUAGE_QUERY_INDEX, TEXT_NORM_QUERY_INDEX, RichVocab

log = logging.getLogger(__name__)

BACKEND = "onnx"


class OnnxEngine:
    """The torch-free engine. ``threads``: the intra-op threads of its ONNX Runtime sessions: the
    one concurrent calls share, and the wide one of lone calls (``ort_session.py``)."""

    def __init__(
        self, model: OnnxModel, threads: EncoderThreads | None = None, pad_multiple: int = 1
    ) -> None:
        import sentencepiece

        self.model = model
        try:
            self._sp = sentencepiece.SentencePieceProcessor(model_file=str(model.files.tokenizer))
            cmvn = load_cmvn(model.files.cmvn) if model.files.cmvn is not None else None
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the tokenizer or CMVN of {model.name!r}: {exc}") from exc
        self._features = NumpyFeatures(model.files.frontend, cmvn, pad_multiple)
        self._encoder = OnnxEncoder(model.graph, threads or EncoderThreads(1))
        self.vocab = RichVocab.from_tokenizer(
            self._sp.piece_to_id, unk_id=self._sp.unk_id(), blank_id=model.files.blank_id
        )
        self._rich_ids = self.vocab.rich_ids()
        self.keyterm_graphs = KeytermGraphs(self._sp, self.vocab.blank_id)
        self._info = ModelInfo(
            name=model.name,
            revision=model.revision[:SHORT_REVISION],
            device="cpu",
            precision="int8",
            backend=BACKEND,
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def sp(self) -> Any:
        """The model's sentencepiece processor."""
        return self._sp

    @property
    def export_state(self) -> str:
        """As ``SenseVoiceEngine.export_state``: this engine always serves the exported graph."""
        return "ready"

    def wait_for_backend(self, backend: str, timeout: float | None = None) -> bool:
        """As ``SenseVoiceEngine.wait_for_backend``: the backend never changes."""
        return backend == BACKEND

    def _logits(self, requests: Sequence[TranscriptionRequest]) -> tuple[np.ndarray, np.ndarray]:
        """CTC logits (B, T+4, V) and valid lengths, queries included, from one encoder pass."""
        feats, lengths = self._features([r.audio for r in requests])
        language = np.array([LANGUAGE_QUERY_INDEX[r.language] for r in requests], dtype=np.int32)
        text_norm = np.array([TEXT_NORM_QUERY_INDEX[r.use_itn] for r in requests], dtype=np.int32)
        return self._encoder.run(feats, lengths, language, text_norm)

    def transcribe(self, requests: Sequence[TranscriptionRequest]) -> list[TranscriptionResult]:
        if not requests:
            return []
        logits, lens = self._logits(requests)
        keyed = [i for i, request in enumerate(requests) if request.keyterms]
        batch = reduce_logits(logits, lens, self.vocab.blank_id, self._rich_ids, keyed)
        return decode_batch(requests, batch, self.vocab, self._sp, self.keyterm_graphs)

    def log_probs(self, requests: Sequence[TranscriptionRequest]) -> list[np.ndarray]:
        """Full (T, V) CTC log-probabilities per utterance; for parity checks and debugging."""
        logits, lens = self._logits(requests)
        out = []
        for row, n in zip(logits, lens, strict=True):
            valid = row[: int(n)]
            peak = valid.max(axis=-1, keepdims=True)
            out.append(valid - (np.log(np.exp(valid - peak).sum(axis=-1, keepdims=True)) + peak))
        return out
