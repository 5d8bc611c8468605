"""SenseVoiceSmall engine: funasr's model, one encoder pass per padded batch.

Loading goes through funasr's ``AutoModel`` (hub id or local dir), exactly as production
serves the real model. Inference does not use ``AutoModel.generate``: it builds the four
query frames per utterance (language hint and ITN may differ inside a batch), runs the
encoder once over the padded batch and reduces the CTC output on the device to the
compact arrays ``scores.decode_utterance`` needs.

The encoder pass runs on torch or on ONNX Runtime (``passes.py``); with backend ``auto`` on
the CPU the engine may switch from torch to ONNX while serving (``switching.py``). ONNX
exports are cached per model revision, a digest of the model's files (``revision.py``).

Requests with keyterms also get their text frames' top-k tokens from the same pass (only their
rows), and ``scores.decode_utterance`` decodes their text by a beam search biased towards the
keyterms (``keyterms.py``); requests without keyterms take the greedy path exactly as before.

Concurrency: ``transcribe`` may run in several threads at once (the server's model workers,
see ``threads.py``); it keeps no per-call state on the engine or its frontend, and reads the
encoder pass once per call (see ``switching.py`` for what a switch does meanwhile).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emostt.errors import ModelLoadError, OutOfMemoryError
from emostt.inference.beam_search import PRUNE, TOP_K
from emostt.inference.ctc_batch import CtcBatch, decode_batch, record_decodes, reduce_logits
from emostt.inference.engine import ModelInfo, TranscriptionRequest, TranscriptionResult
from emostt.inference.features import Features
from emostt.inference.keyterms import KeytermGraphs
from emostt.inference.loading import (
    auto_backend,
    build_with_timeout,
    check_backend,
    check_precision,
    pick_device,
    resolve_precision,
    verify_checkpoint,
)
from emostt.inference.model_source import ModelSource, resolve_model
from emostt.inference.onnx_cache import (
    DIGESTS_DIR,
    cache_dir_for,
    cached_export,
    default_cache_root,
    ensure_exported,
)
from emostt.inference.onnx_encoder import OnnxEncoder
from emostt.inference.options import EngineOptions
from emostt.inference.ort_session import EncoderThreads, encoder_threads
from emostt.inference.passes import EncoderPass, OnnxPass, TorchPass, dtype_of, serving_torch_model
from emostt.inference.revision import SHORT_REVISION, model_revision
from emostt.inference.rich_tokens import (
    EMOTION_QUERY_INDEX,
    EVENT_QUERY_INDEX,
    LANGUAGE_QUERY_INDEX,
    QUERY_FRAMES,
    TEXT_NORM_QUERY_INDEX,
    RichVocab,
)
from emostt.inference.switching import EXPORT_THREAD_NAME, EncoderSwitch, ExportState
from emostt.inference.threads import set_thread_count
from emostt.machine import usable_cores

__all__ = ["EXPORT_THREAD_NAME", "EngineOptions", "ExportState", "SenseVoiceEngine", "record_decodes"]

log = logging.getLogger(__name__)


def _cached_onnx(cache_dir: Path, threads: EncoderThreads) -> OnnxEncoder | None:
    """The cached ONNX encoder for backend auto; None when nothing is cached or it cannot load."""
    path = cached_export(cache_dir)
    if path is None:
        return None
    try:
        return OnnxEncoder(path, threads)
    except ModelLoadError as exc:
        # auto must serve: a damaged cache entry costs speed, not the start.
        log.error("%s; serving with torch (delete %s to export it again)", exc, cache_dir)
        return None


class SenseVoiceEngine:
    """The production engine. Construct with ``SenseVoiceEngine.load``."""

    def __init__(
        self,
        auto_model: Any,
        source: ModelSource,
        device: str,
        precision: str,
        encoder_pass: EncoderPass,
        pad_multiple: int = 1,
        revision: str = "unknown",
    ) -> None:
        self._tokenizer = auto_model.kwargs["tokenizer"]
        self._frontend = auto_model.kwargs["frontend"]
        # funasr dithers with fresh random noise on every call; Features applies the configured
        # amount from a fixed seed instead, so identical audio always gives identical results.
        dither = float(self._frontend.dither)
        self._frontend.dither = 0.0
        self._features = Features(self._frontend, torch.device(device), pad_multiple, dither=dither)
        self._device = torch.device(device)
        self._dtype = dtype_of(precision)
        sp = self._tokenizer.sp
        self.vocab = RichVocab.from_tokenizer(
            sp.piece_to_id, unk_id=sp.unk_id(), blank_id=auto_model.model.blank_id
        )
        self._rich_ids = self.vocab.rich_ids()
        self._rich_index = torch.tensor(self._rich_ids, dtype=torch.long, device=self._device)
        self.keyterm_graphs = KeytermGraphs(sp, self.vocab.blank_id)
        info = ModelInfo(
            name=source.spec,
            revision=revision[:SHORT_REVISION],
            device=device,
            precision=precision,
            backend=encoder_pass.backend,
        )
        self._encoder = EncoderSwitch(encoder_pass, info)

    @classmethod
    def load(cls, spec: str, options: EngineOptions | None = None) -> SenseVoiceEngine:
        opts = options or EngineOptions()
        device = pick_device(opts.device)
        precision = resolve_precision(device, opts.precision)
        check_precision(device, precision)
        check_backend(opts.backend, device, precision)
        source = resolve_model(spec, opts.hub)
        auto_model = build_with_timeout(source, device, opts.load_timeout_s)
        # funasr sets 4 intra-op threads whatever the machine; use the cores this process may run on.
        set_thread_count(opts.threads or usable_cores())
        model_dir = Path(auto_model.kwargs.get("model_path", source.local_dir or ""))
        has_dir = (model_dir / "config.yaml").is_file() and (model_dir / "model.pt").is_file()
        if has_dir:
            verify_checkpoint(auto_model.model, model_dir)
        auto_model.model.eval()
        cache_root = Path(opts.onnx_cache_dir) if opts.onnx_cache_dir else default_cache_root()
        # By content: a fine-tune with the same config and size is another revision.
        revision = model_revision(model_dir, cache_root / DIGESTS_DIR) if has_dir else None
        onnx_threads = encoder_threads(opts.threads, opts.lone_call_threads)
        wants_onnx = opts.backend == "onnx" or (
            opts.backend == "auto" and auto_backend(device, precision) == "onnx"
        )
        if opts.backend == "onnx" and revision is None:
            raise ModelLoadError(f"backend onnx needs a local model dir to export from; {spec!r} has none")
        cache_dir = cache_dir_for(cache_root, revision) if wants_onnx and revision else None
        onnx_encoder = None
        if cache_dir is not None and opts.backend == "onnx":
            onnx_encoder = OnnxEncoder(ensure_exported(auto_model, cache_dir), onnx_threads)
        elif cache_dir is not None:
            onnx_encoder = _cached_onnx(cache_dir, onnx_threads)
        encoder_pass: EncoderPass
        if onnx_encoder is not None:
            # The engine keeps no reference to the torch model: its weights are freed after load.
            encoder_pass = OnnxPass(onnx_encoder)
        else:
            model = serving_torch_model(auto_model.model, precision, opts.compile)
            encoder_pass = TorchPass(model, torch.device(device), dtype_of(precision))
        engine = cls(
            auto_model, source, device, precision, encoder_pass, opts.pad_multiple, revision or "unknown"
        )
        if onnx_encoder is None and cache_dir is not None and opts.background_export:
            # The export child loads the model from its dir itself: no fp32 copy stays here.
            engine._encoder.start_export(model_dir, cache_dir, onnx_threads)
        log.info(
            "model loaded",
            extra={
                "model": spec,
                "revision": engine.info.revision,
                "device": device,
                "precision": precision,
                "backend": engine.info.backend,
                "onnx_export": engine.export_state,
            },
        )
        return engine

    @classmethod
    def load_with_fallback(
        cls, spec: str, fallback_model: str | None, options: EngineOptions | None = None
    ) -> SenseVoiceEngine:
        """``load(spec)``; when that fails and ``fallback_model`` is set, load it instead, loudly.
        ``info.name`` tells which model answered."""
        try:
            return cls.load(spec, options)
        except ModelLoadError as exc:
            if not fallback_model:
                raise
            log.warning(
                "%s -- FALLING BACK to model %r: results do not come from %r", exc, fallback_model, spec
            )
            return cls.load(fallback_model, options)

    @property
    def info(self) -> ModelInfo:
        """The model and the backend serving now (replaced, never mutated, on a switch)."""
        return self._encoder.info

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def export_state(self) -> ExportState:
        """The ONNX export: "none", "exporting" (in the background), "ready" or "failed"."""
        return self._encoder.state

    @property
    def _model(self) -> torch.nn.Module:
        """The torch model serving now; AttributeError once the engine serves with ONNX."""
        encoder_pass = self._encoder.current
        if not isinstance(encoder_pass, TorchPass):
            raise AttributeError("the engine serves with ONNX Runtime; it holds no torch model")
        return encoder_pass.model

    def wait_for_backend(self, backend: str, timeout: float | None = None) -> bool:
        """Whether ``info.backend`` is ``backend``, waiting up to ``timeout`` s while a background
        export runs (returning early if it fails). Safe from any thread."""
        return self._encoder.wait_for_backend(backend, timeout)

    # -- batch pipeline -------------------------------------------------------------------

    def _logits(self, requests: Sequence[TranscriptionRequest]) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC logits (B, T+4, V) and valid lengths, queries included, from one encoder pass."""
        # Read once: a switch to ONNX meanwhile must not split this call across backends.
        encoder_pass = self._encoder.current
        feats, lengths = self._features([r.audio for r in requests])
        feats = feats.to(dtype=self._dtype)
        query_rows = [
            (
                LANGUAGE_QUERY_INDEX[r.language],
                EMOTION_QUERY_INDEX,
                EVENT_QUERY_INDEX,
                TEXT_NORM_QUERY_INDEX[r.use_itn],
            )
            for r in requests
        ]
        return encoder_pass(feats, lengths, query_rows)

    def log_probs(self, requests: Sequence[TranscriptionRequest]) -> list[np.ndarray]:
        """Full (T, V) CTC log-probabilities per utterance; for parity checks and debugging."""
        with torch.inference_mode():
            logits, lens = self._logits(requests)
            logp = torch.log_softmax(logits, dim=-1).cpu().numpy()
        return [logp[i, : int(n)] for i, n in enumerate(lens.cpu())]

    def transcribe(self, requests: Sequence[TranscriptionRequest]) -> list[TranscriptionResult]:
        if not requests:
            return []
        try:
            with torch.inference_mode():
                logits, lens = self._logits(requests)
                return self.results_from_logits(requests, logits, lens)
        except torch.OutOfMemoryError as exc:
            raise OutOfMemoryError(f"out of memory on a batch of {len(requests)}") from exc

    def results_from_logits(
        self, requests: Sequence[TranscriptionRequest], logits: torch.Tensor, lens: torch.Tensor
    ) -> list[TranscriptionResult]:
        """What ``transcribe`` does after the encoder pass: CTC logits (B, T+4, V) and valid
        lengths to results (greedy, or biased decoding for requests with keyterms)."""
        keyed = [i for i, r in enumerate(requests) if r.keyterms]
        if logits.device.type == "cpu":
            # The torch-free engine's numpy reductions, on the same memory: faster than torch's
            # on the CPU (ctc_batch.py's measurements), so both CPU engines share one path.
            batch = reduce_logits(
                logits.float().numpy(), lens.numpy(), self.vocab.blank_id, self._rich_ids, keyed
            )
        else:
            batch = self._reduce_on_device(logits, lens, keyed)
        return decode_batch(requests, batch, self.vocab, self._tokenizer.sp, self.keyterm_graphs)

    def _reduce_on_device(self, logits: torch.Tensor, lens: torch.Tensor, keyed: list[int]) -> CtcBatch:
        """``reduce_logits`` with torch on the logits' device (a GPU's), so that only the compact
        arrays cross to the host."""
        started = time.perf_counter()
        lse = torch.logsumexp(logits, dim=-1)
        best_logit, best_ids = logits.max(dim=-1)
        best_logp = best_logit - lse
        blank_logp = logits[..., self.vocab.blank_id] - lse
        query_logp = logits[:, :QUERY_FRAMES].index_select(-1, self._rich_index)
        query_logp = query_logp - lse[:, :QUERY_FRAMES, None]
        host = [t.cpu().numpy() for t in (best_ids, best_logp, blank_logp, query_logp, lens)]
        reduced = time.perf_counter()
        top = self._text_top_device(logits, lse, blank_logp, best_logit, keyed) if keyed else None
        shared = (reduced - started, time.perf_counter() - reduced)
        ids, best, blank, query, out_lens = host
        text_top = {}
        if top is not None:
            top_ids, top_logp = top
            for row, i in enumerate(keyed):
                cut = int(out_lens[i]) - QUERY_FRAMES
                text_top[i] = (top_ids[row, :cut], top_logp[row, :cut])
        return CtcBatch(ids, best, blank, query, out_lens, self._rich_ids, text_top, *shared)

    def _text_top_device(
        self,
        logits: torch.Tensor,
        lse: torch.Tensor,
        blank_logp: torch.Tensor,
        best_logit: torch.Tensor,
        rows: list[int],
    ) -> tuple[np.ndarray, np.ndarray]:
        """``ctc_batch.text_top_k`` with torch on the logits' device, for the text frames of
        ``rows`` (ascending) only, (len(rows), T, k) on the host: ``topk`` of the active frames'
        rows, then the same ``PRUNE`` cut. Frames where no token but blank can come within
        ``PRUNE`` nats of the best are not sorted; they hold blank ids and -inf."""
        index = torch.tensor(rows, dtype=torch.long, device=logits.device)
        blank = blank_logp.index_select(0, index)[:, QUERY_FRAMES:]
        active = torch.log1p(-torch.exp(blank)) >= blank - PRUNE
        k = min(TOP_K, logits.shape[-1])
        top_ids = torch.full((*blank.shape, k), self.vocab.blank_id, dtype=torch.long, device=logits.device)
        top_logp = torch.full((*blank.shape, k), float("-inf"), dtype=logits.dtype, device=logits.device)
        if bool(active.any()):
            # Only the active frames' rows are gathered: no copy of the full (rows, T, V) logits.
            where = torch.zeros(logits.shape[:2], dtype=torch.bool, device=logits.device)
            where[index, QUERY_FRAMES:] = active
            values, ids = logits[where].topk(k, dim=-1)
            # As on the host: a token more than PRUNE below its frame's best is no candidate.
            keep = values >= (best_logit[where] - PRUNE)[:, None]
            top_ids[active] = torch.where(keep, ids, self.vocab.blank_id)
            top_logp[active] = torch.where(keep, values - lse[where][:, None], float("-inf"))
        return top_ids.cpu().numpy(), top_logp.cpu().numpy()
