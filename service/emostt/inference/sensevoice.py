"""SenseVoiceSmall engine: funasr's model, one encoder pass per padded batch.

Loading goes through funasr's ``AutoModel`` (hub id or local dir), exactly as production
serves the real model. Inference does not use ``AutoModel.generate``: it builds the four
query frames per utterance (language hint and ITN may differ inside a batch), runs the
encoder once over the padded batch and reduces the CTC output on the device to the
compact arrays ``scores.decode_utterance`` needs.

Concurrency: ``transcribe`` may run in several threads at once (the server's model workers,
see ``threads.py``); it keeps no per-call state on the engine or its frontend.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emostt.errors import ModelLoadError, OutOfMemoryError
from emostt.inference.engine import ModelInfo, TranscriptionRequest, TranscriptionResult
from emostt.inference.features import Features
from emostt.inference.loading import (
    build_with_timeout,
    check_backend,
    check_precision,
    pick_device,
    resolve_precision,
    revision_of,
    verify_checkpoint,
)
from emostt.inference.model_source import ModelSource, resolve_model
from emostt.inference.onnx_encoder import OnnxEncoder, cache_dir_for, default_cache_root, ensure_exported
from emostt.inference.rich_tokens import (
    EMOTION_QUERY_INDEX,
    EVENT_QUERY_INDEX,
    LANGUAGE_QUERY_INDEX,
    QUERY_FRAMES,
    TEXT_NORM_QUERY_INDEX,
    RichVocab,
)
from emostt.inference.scores import CtcFrames, decode_utterance
from emostt.inference.threads import set_thread_count, usable_cores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    device: str = "cpu"
    precision: str = "auto"
    hub: str = "ms"
    threads: int | None = None
    load_timeout_s: float = 900.0
    # Round the padded time axis up to this many frames (shape buckets for compiled encoders).
    pad_multiple: int = 1
    compile: bool = False
    # "torch", or "onnx": the encoder on ONNX Runtime int8 (CPU), exported once per model
    # revision into onnx_cache_dir (default ~/.cache/emostt/onnx).
    backend: str = "torch"
    onnx_cache_dir: str | None = None


class SenseVoiceEngine:
    """The production engine. Construct with ``SenseVoiceEngine.load``."""

    def __init__(
        self,
        auto_model: Any,
        source: ModelSource,
        device: str,
        precision: str,
        pad_multiple: int = 1,
        onnx_encoder: OnnxEncoder | None = None,
    ) -> None:
        self._model = auto_model.model
        self._onnx = onnx_encoder
        self._tokenizer = auto_model.kwargs["tokenizer"]
        self._frontend = auto_model.kwargs["frontend"]
        # funasr dithers with fresh random noise on every call; Features applies the configured
        # amount from a fixed seed instead, so identical audio always gives identical results.
        dither = float(self._frontend.dither)
        self._frontend.dither = 0.0
        self._features = Features(self._frontend, torch.device(device), pad_multiple, dither=dither)
        self._device = torch.device(device)
        self._dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        sp = self._tokenizer.sp
        self.vocab = RichVocab.from_tokenizer(
            sp.piece_to_id, unk_id=sp.unk_id(), blank_id=self._model.blank_id
        )
        self._rich_ids = self.vocab.rich_ids()
        self._rich_index = torch.tensor(self._rich_ids, dtype=torch.long, device=self._device)
        model_dir = Path(auto_model.kwargs.get("model_path", source.local_dir or source.spec))
        revision = revision_of(model_dir) if (model_dir / "config.yaml").is_file() else "unknown"
        backend = "onnx" if onnx_encoder is not None else "torch"
        self._info = ModelInfo(
            name=source.spec, revision=revision, device=device, precision=precision, backend=backend
        )

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
        if (model_dir / "model.pt").is_file():
            verify_checkpoint(auto_model.model, model_dir)
        model = auto_model.model.eval()
        onnx_encoder = None
        if opts.backend == "onnx":
            root = Path(opts.onnx_cache_dir) if opts.onnx_cache_dir else default_cache_root()
            revision = revision_of(model_dir) if (model_dir / "config.yaml").is_file() else source.spec
            path = ensure_exported(auto_model, cache_dir_for(root, revision))
            onnx_encoder = OnnxEncoder(path, opts.threads or 1)
            # The torch encoder is not run any more; its weights need not stay in memory.
            model.encoder = torch.nn.Identity()
        elif precision == "int8":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        elif precision in ("fp16", "bf16"):
            model = model.to({"fp16": torch.float16, "bf16": torch.bfloat16}[precision])
        auto_model.model = model
        engine = cls(auto_model, source, device, precision, opts.pad_multiple, onnx_encoder=onnx_encoder)
        if opts.compile and onnx_encoder is None:
            # Bucketed time axis (pad_multiple) keeps the number of compiled shapes small.
            engine._model.encoder = torch.compile(engine._model.encoder, dynamic=False)
        log.info(
            "model loaded",
            extra={"model": spec, "device": device, "precision": precision, "backend": engine.info.backend},
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
        return self._info

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    # -- batch pipeline -------------------------------------------------------------------

    def _logits(self, requests: Sequence[TranscriptionRequest]) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC logits (B, T+4, V) and valid lengths, queries included, from one encoder pass."""
        feats, lengths = self._features([r.audio for r in requests])
        feats = feats.to(dtype=self._dtype)
        batch = len(requests)
        query_rows = [
            (
                LANGUAGE_QUERY_INDEX[r.language],
                EMOTION_QUERY_INDEX,
                EVENT_QUERY_INDEX,
                TEXT_NORM_QUERY_INDEX[r.use_itn],
            )
            for r in requests
        ]
        if self._onnx is not None:
            # funasr's exported graph embeds the emotion and event queries itself, at these indices.
            assert (EMOTION_QUERY_INDEX, EVENT_QUERY_INDEX) == (1, 2)
            rows = np.asarray(query_rows, dtype=np.int32)
            return self._onnx.run(feats, lengths, rows[:, 0], rows[:, 3])
        idx = torch.tensor(query_rows, dtype=torch.long).to(self._device)
        queries = self._model.embed(idx).to(self._dtype)
        assert queries.shape[:2] == (batch, QUERY_FRAMES)
        encoder_in = torch.cat((queries, feats), dim=1)
        encoder_out, out_lens = self._model.encoder(encoder_in, lengths + QUERY_FRAMES)
        if isinstance(encoder_out, tuple):
            encoder_out = encoder_out[0]
        return self._model.ctc.ctc_lo(encoder_out).float(), out_lens

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
                lse = torch.logsumexp(logits, dim=-1)
                best_logit, best_ids = logits.max(dim=-1)
                best_logp = best_logit - lse
                blank_logp = logits[..., self.vocab.blank_id] - lse
                query_logp = logits[:, :QUERY_FRAMES].index_select(-1, self._rich_index)
                query_logp = query_logp - lse[:, :QUERY_FRAMES, None]
                host = [t.cpu().numpy() for t in (best_ids, best_logp, blank_logp, query_logp, lens)]
        except torch.OutOfMemoryError as exc:
            raise OutOfMemoryError(f"out of memory on a batch of {len(requests)}") from exc
        ids, best, blank, query, out_lens = host
        sp = self._tokenizer.sp
        results = []
        for i, req in enumerate(requests):
            n = int(out_lens[i])
            frames = CtcFrames(ids[i, :n], best[i, :n], blank[i, :n], query[i], self._rich_ids)
            results.append(decode_utterance(frames, self.vocab, req, sp.decode_ids, sp.id_to_piece))
        return results
