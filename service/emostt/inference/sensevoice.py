"""SenseVoiceSmall engine: funasr's model, one encoder pass per padded batch.

Loading goes through funasr's ``AutoModel`` (hub id or local dir), exactly as production
serves the real model. Inference does not use ``AutoModel.generate``: it builds the four
query frames per utterance (language hint and ITN may differ inside a batch), runs the
encoder once over the padded batch and reduces the CTC output on the device to the
compact arrays ``scores.decode_utterance`` needs.

Concurrency: an engine is owned by one thread; ``transcribe`` is not re-entrant.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emostt.errors import InvalidAudioError, ModelLoadError, OutOfMemoryError
from emostt.inference.engine import ModelInfo, TranscriptionRequest, TranscriptionResult
from emostt.inference.funasr_import import auto_model_class as auto_model_class_
from emostt.inference.funasr_import import stdout_to_stderr
from emostt.inference.model_source import ModelSource, resolve_model
from emostt.inference.rich_tokens import (
    EMOTION_QUERY_INDEX,
    EVENT_QUERY_INDEX,
    LANGUAGE_QUERY_INDEX,
    QUERY_FRAMES,
    TEXT_NORM_QUERY_INDEX,
    RichVocab,
)
from emostt.inference.scores import CtcFrames, decode_utterance

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8", "fp16", "bf16")
MIN_SAMPLES = 400  # one 25 ms analysis window at 16 kHz


@dataclass(frozen=True)
class EngineOptions:
    device: str = "cpu"
    precision: str = "auto"
    hub: str = "ms"
    threads: int | None = None
    load_timeout_s: float = 900.0


def _pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ModelLoadError(f"device must be cpu, cuda[:N] or auto, got {device!r}")
    return device


def resolve_precision(device: str, precision: str) -> str:
    """``auto`` is fp32 on the CPU and fp16 on CUDA."""
    if precision != "auto":
        return precision
    return "fp32" if device == "cpu" else "fp16"


def _check_precision(device: str, precision: str) -> None:
    if precision not in PRECISIONS:
        raise ModelLoadError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and device != "cpu":
        raise ModelLoadError("int8 dynamic quantization runs on the CPU only; use fp16 or bf16 on CUDA")
    if precision in ("fp16", "bf16") and device == "cpu":
        raise ModelLoadError(f"{precision} is for CUDA; on the CPU use fp32 or int8")


def _build_with_timeout(source: ModelSource, device: str, timeout_s: float) -> Any:
    """funasr's AutoModel, bounded in time: an offline hub lookup must not hang start-up."""
    auto_model_class = auto_model_class_()

    target = str(source.local_dir) if source.local_dir else source.spec
    box: dict[str, Any] = {}

    def build() -> None:
        try:
            box["model"] = auto_model_class(
                model=target, hub=source.hub, device=device, disable_update=True, disable_pbar=True
            )
        except BaseException as exc:  # surfaced below with context
            box["error"] = exc

    worker = threading.Thread(target=build, name="emostt-model-load", daemon=True)
    with stdout_to_stderr():
        worker.start()
        worker.join(timeout_s)
    hint = "pass --model with a local SenseVoice dir (or --model demo to run offline)"
    if worker.is_alive():
        raise ModelLoadError(f"loading {source.spec!r} took longer than {timeout_s:.0f}s; {hint}")
    if "error" in box:
        exc = box["error"]
        if source.is_local:
            raise ModelLoadError(f"cannot load model dir {target!r}: {exc}") from exc
        raise ModelLoadError(
            f"cannot download {source.spec!r} from {'ModelScope' if source.hub == 'ms' else 'Hugging Face'}"
            f" (offline or unknown id?); {hint}"
        ) from exc
    return box["model"]


def _verify_checkpoint(model: torch.nn.Module, model_dir: Path) -> None:
    """funasr only warns when a checkpoint misses keys; a half-random model must not serve."""
    path = model_dir / "model.pt"
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and f"module.{k}" not in state]
    wrong = [k for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or wrong:
        raise ModelLoadError(
            f"{path} does not match config.yaml: {len(missing)} missing and {len(wrong)} mis-shaped tensors "
            f"(first: {(missing + wrong)[0]})"
        )


def _revision(model_dir: Path) -> str:
    digest = hashlib.sha1((model_dir / "config.yaml").read_bytes())
    digest.update(str((model_dir / "model.pt").stat().st_size).encode())
    return digest.hexdigest()[:12]


class SenseVoiceEngine:
    """The production engine. Construct with ``SenseVoiceEngine.load``."""

    def __init__(self, auto_model: Any, source: ModelSource, device: str, precision: str) -> None:
        self._model = auto_model.model
        self._tokenizer = auto_model.kwargs["tokenizer"]
        self._frontend = auto_model.kwargs["frontend"]
        self._frontend.dither = 0.0  # deterministic features for identical audio
        self._device = torch.device(device)
        self._dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        sp = self._tokenizer.sp
        self.vocab = RichVocab.from_tokenizer(
            sp.piece_to_id, unk_id=sp.unk_id(), blank_id=self._model.blank_id
        )
        self._rich_ids = self.vocab.rich_ids()
        self._rich_index = torch.tensor(self._rich_ids, dtype=torch.long, device=self._device)
        model_dir = Path(auto_model.kwargs.get("model_path", source.local_dir or source.spec))
        revision = _revision(model_dir) if (model_dir / "config.yaml").is_file() else "unknown"
        self._info = ModelInfo(name=source.spec, revision=revision, device=device, precision=precision)

    @classmethod
    def load(cls, spec: str, options: EngineOptions | None = None) -> SenseVoiceEngine:
        opts = options or EngineOptions()
        device = _pick_device(opts.device)
        precision = resolve_precision(device, opts.precision)
        _check_precision(device, precision)
        if opts.threads:
            torch.set_num_threads(opts.threads)
        source = resolve_model(spec, opts.hub)
        auto_model = _build_with_timeout(source, device, opts.load_timeout_s)
        model_dir = Path(auto_model.kwargs.get("model_path", source.local_dir or ""))
        if (model_dir / "model.pt").is_file():
            _verify_checkpoint(auto_model.model, model_dir)
        model = auto_model.model.eval()
        if precision == "int8":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        elif precision in ("fp16", "bf16"):
            model = model.to({"fp16": torch.float16, "bf16": torch.bfloat16}[precision])
        auto_model.model = model
        engine = cls(auto_model, source, device, precision)
        log.info("model loaded", extra={"model": spec, "device": device, "precision": precision})
        return engine

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    # -- batch pipeline -------------------------------------------------------------------

    def _features(self, requests: Sequence[TranscriptionRequest]) -> tuple[torch.Tensor, torch.Tensor]:
        feats = []
        for req in requests:
            if len(req.audio) < MIN_SAMPLES:
                raise InvalidAudioError(f"utterance too short: {len(req.audio)} samples (< {MIN_SAMPLES})")
            wav = torch.from_numpy(np.ascontiguousarray(req.audio, dtype=np.float32))[None, :]
            feat, _ = self._frontend(wav, [wav.shape[1]])
            feats.append(feat[0])
        lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.int32)
        padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True, padding_value=0.0)
        return padded, lengths

    def _logits(self, requests: Sequence[TranscriptionRequest]) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC logits (B, T+4, V) and valid lengths, queries included, from one encoder pass."""
        feats, lengths = self._features(requests)
        feats = feats.to(self._device, dtype=self._dtype, non_blocking=True)
        lengths = lengths.to(self._device)
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
