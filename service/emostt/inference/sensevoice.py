"""SenseVoiceSmall engine: funasr's model, one encoder pass per padded batch.

Loading goes through funasr's ``AutoModel`` (hub id or local dir), exactly as production
serves the real model. Inference does not use ``AutoModel.generate``: it builds the four
query frames per utterance (language hint and ITN may differ inside a batch), runs the
encoder once over the padded batch and reduces the CTC output on the device to the
compact arrays ``scores.decode_utterance`` needs.

The encoder pass runs on torch or on ONNX Runtime (``onnx_encoder.py``). With backend
``auto`` on the CPU, an engine whose model has no cached ONNX export serves with torch at
once and may export in the background (a thread that waits on a low-priority child
process), then switch to ONNX while serving.

Concurrency: ``transcribe`` may run in several threads at once (the server's model workers,
see ``threads.py``); it keeps no per-call state on the engine or its frontend. The encoder
pass is one attribute, read once per call, and the background export replaces it (and
``info``) by plain assignment: a call runs wholly on the backend it started with, and the
pass it holds keeps its model alive until the call returns.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from emostt.errors import ModelLoadError, OutOfMemoryError
from emostt.inference.engine import ModelInfo, TranscriptionRequest, TranscriptionResult
from emostt.inference.features import Features
from emostt.inference.loading import (
    auto_backend,
    build_with_timeout,
    check_backend,
    check_precision,
    pick_device,
    resolve_precision,
    revision_of,
    verify_checkpoint,
)
from emostt.inference.model_source import ModelSource, resolve_model
from emostt.inference.onnx_encoder import (
    OnnxEncoder,
    cache_dir_for,
    cached_export,
    default_cache_root,
    ensure_exported,
    export_in_subprocess,
)
from emostt.inference.rich_tokens import (
    EMOTION_QUERY_INDEX,
    EVENT_QUERY_INDEX,
    LANGUAGE_QUERY_INDEX,
    QUERY_FRAMES,
    TEXT_NORM_QUERY_INDEX,
    RichVocab,
)
from emostt.inference.scores import CtcFrames, decode_utterance
from emostt.inference.threads import lower_thread_priority, set_thread_count, usable_cores

log = logging.getLogger(__name__)

# "none": no export planned; "exporting": a background export runs; "ready": the engine serves
# with the ONNX encoder; "failed": the background export failed and torch keeps serving.
ExportState = Literal["none", "exporting", "ready", "failed"]

EXPORT_THREAD_NAME = "emostt-onnx-export"

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


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
    # "auto": onnx on the CPU int8 path when an export is cached, else torch (CUDA, fp32, or
    # nothing cached yet). "torch" never exports. "onnx": the encoder on ONNX Runtime int8
    # (CPU), exported at load unless cached. Exports are cached per model revision in
    # onnx_cache_dir (default ~/.cache/emostt/onnx).
    backend: str = "auto"
    onnx_cache_dir: str | None = None
    # With backend auto and nothing cached: export in a background thread and switch to ONNX
    # when done (a server); False serves with torch only (a one-shot CLI run).
    background_export: bool = False


QueryRows = list[tuple[int, int, int, int]]


class EncoderPass(Protocol):
    """Query frames + encoder + CTC projection: CTC logits (B, T+4, V) and valid lengths."""

    @property
    def backend(self) -> str: ...

    def __call__(
        self, feats: torch.Tensor, lengths: torch.Tensor, query_rows: QueryRows
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class TorchPass:
    """The encoder pass on a torch model. Keeps no per-call state; safe from several threads.

    It holds the model, so a call that started on it keeps the weights alive after the
    engine switched to ONNX; they are freed when the last such call returns.
    """

    backend = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self._device = device
        self._dtype = dtype

    def __call__(
        self, feats: torch.Tensor, lengths: torch.Tensor, query_rows: QueryRows
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model: Any = self.model
        idx = torch.tensor(query_rows, dtype=torch.long).to(self._device)
        queries = model.embed(idx).to(self._dtype)
        assert queries.shape[:2] == (len(query_rows), QUERY_FRAMES)
        encoder_in = torch.cat((queries, feats), dim=1)
        encoder_out, out_lens = model.encoder(encoder_in, lengths + QUERY_FRAMES)
        if isinstance(encoder_out, tuple):
            encoder_out = encoder_out[0]
        return model.ctc.ctc_lo(encoder_out).float(), out_lens


class OnnxPass:
    """The encoder pass on ONNX Runtime; safe from several threads (see ``OnnxEncoder``)."""

    backend = "onnx"

    def __init__(self, encoder: OnnxEncoder) -> None:
        self.encoder = encoder

    def __call__(
        self, feats: torch.Tensor, lengths: torch.Tensor, query_rows: QueryRows
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # funasr's exported graph embeds the emotion and event queries itself, at these indices.
        assert (EMOTION_QUERY_INDEX, EVENT_QUERY_INDEX) == (1, 2)
        rows = np.asarray(query_rows, dtype=np.int32)
        return self.encoder.run(feats, lengths, rows[:, 0], rows[:, 3])


def _cache_dir(opts: EngineOptions, model_dir: Path, source: ModelSource) -> Path:
    root = Path(opts.onnx_cache_dir) if opts.onnx_cache_dir else default_cache_root()
    revision = revision_of(model_dir) if (model_dir / "config.yaml").is_file() else source.spec
    return cache_dir_for(root, revision)


def _torch_model(model: torch.nn.Module, precision: str, compile_encoder: bool) -> torch.nn.Module:
    """The serving torch model: a quantized copy for int8 (``model`` stays fp32), else cast."""
    if precision == "int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    elif precision in _DTYPES:
        model = model.to(_DTYPES[precision])
    if compile_encoder:
        # Bucketed time axis (pad_multiple) keeps the number of compiled shapes small.
        funasr_model: Any = model
        funasr_model.encoder = torch.compile(funasr_model.encoder, dynamic=False)
    return model


def _cached_onnx(cache_dir: Path, threads: int) -> OnnxEncoder | None:
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
    ) -> None:
        self._pass = encoder_pass
        self._tokenizer = auto_model.kwargs["tokenizer"]
        self._frontend = auto_model.kwargs["frontend"]
        # funasr dithers with fresh random noise on every call; Features applies the configured
        # amount from a fixed seed instead, so identical audio always gives identical results.
        dither = float(self._frontend.dither)
        self._frontend.dither = 0.0
        self._features = Features(self._frontend, torch.device(device), pad_multiple, dither=dither)
        self._device = torch.device(device)
        self._dtype = _DTYPES.get(precision, torch.float32)
        sp = self._tokenizer.sp
        self.vocab = RichVocab.from_tokenizer(
            sp.piece_to_id, unk_id=sp.unk_id(), blank_id=auto_model.model.blank_id
        )
        self._rich_ids = self.vocab.rich_ids()
        self._rich_index = torch.tensor(self._rich_ids, dtype=torch.long, device=self._device)
        model_dir = Path(auto_model.kwargs.get("model_path", source.local_dir or source.spec))
        revision = revision_of(model_dir) if (model_dir / "config.yaml").is_file() else "unknown"
        self._info = ModelInfo(
            name=source.spec,
            revision=revision,
            device=device,
            precision=precision,
            backend=encoder_pass.backend,
        )
        self._export_state: ExportState = "ready" if encoder_pass.backend == "onnx" else "none"
        # Set when a background export has ended: switched, or failed.
        self._export_done = threading.Event()

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
        auto_model.model.eval()
        onnx_threads = opts.threads or 1
        wants_onnx = opts.backend == "onnx" or (
            opts.backend == "auto" and auto_backend(device, precision) == "onnx"
        )
        cache_dir = _cache_dir(opts, model_dir, source) if wants_onnx else None
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
            model = _torch_model(auto_model.model, precision, opts.compile)
            encoder_pass = TorchPass(model, torch.device(device), _DTYPES.get(precision, torch.float32))
        engine = cls(auto_model, source, device, precision, encoder_pass, opts.pad_multiple)
        if onnx_encoder is None and cache_dir is not None and opts.background_export:
            # The export child loads the model from its dir itself: no fp32 copy stays here.
            engine._start_background_export(model_dir, cache_dir, onnx_threads)
        log.info(
            "model loaded",
            extra={
                "model": spec,
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
        return self._info

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def export_state(self) -> ExportState:
        """The ONNX export: "none", "exporting" (in the background), "ready" or "failed"."""
        return self._export_state

    @property
    def _model(self) -> torch.nn.Module:
        """The torch model serving now; AttributeError once the engine serves with ONNX."""
        encoder_pass = self._pass
        if not isinstance(encoder_pass, TorchPass):
            raise AttributeError("the engine serves with ONNX Runtime; it holds no torch model")
        return encoder_pass.model

    def wait_for_backend(self, backend: str, timeout: float | None = None) -> bool:
        """Whether ``info.backend`` is ``backend``, waiting up to ``timeout`` s while a background
        export runs (returning early if it fails). Safe from any thread."""
        if self._info.backend == backend:
            return True
        if self._export_state == "exporting":
            self._export_done.wait(timeout)
        return self._info.backend == backend

    # -- background ONNX export -----------------------------------------------------------

    def _start_background_export(self, model_dir: Path, cache_dir: Path, onnx_threads: int) -> None:
        """Export the model in ``model_dir`` into ``cache_dir`` from one daemon thread, then switch."""
        self._export_state = "exporting"
        log.info(
            "exporting the encoder to ONNX in the background; serving with torch until it finishes",
            extra={"model": self._info.name, "dir": str(cache_dir)},
        )
        thread = threading.Thread(
            target=self._export_and_switch,
            args=(model_dir, cache_dir, onnx_threads),
            name=EXPORT_THREAD_NAME,
            daemon=True,
        )
        thread.start()

    def _export_and_switch(self, model_dir: Path, cache_dir: Path, onnx_threads: int) -> None:
        """The export thread's body. Never raises: on failure the engine keeps serving with torch."""
        started = time.monotonic()
        try:
            # Serving keeps the cores: the child exports niced, and the session build here is too.
            lower_thread_priority()
            if not (model_dir / "config.yaml").is_file():
                raise ModelLoadError(f"no local model dir to export from (got {str(model_dir)!r})")
            encoder = OnnxEncoder(export_in_subprocess(model_dir, cache_dir), onnx_threads)
        except Exception as exc:  # whatever went wrong: say why once, keep serving, no retry
            self._export_state = "failed"
            log.error(
                "ONNX export failed; serving with torch: %s",
                exc,
                extra={"model": self._info.name, "dir": str(cache_dir)},
            )
            self._export_done.set()
            return
        self._switch_to(OnnxPass(encoder))
        elapsed = time.monotonic() - started
        log.info(
            "switched to the ONNX encoder after %.0f s",
            elapsed,
            extra={"model": self._info.name, "elapsed_s": round(elapsed, 1)},
        )

    def _switch_to(self, encoder_pass: EncoderPass) -> None:
        """Serve later calls with ``encoder_pass``. Calls already running keep the pass they
        read, and its model, until they return; the old pass is then freed with its weights.
        The torch modules are not changed in place, because a running call still uses them."""
        self._pass = encoder_pass
        self._info = dataclasses.replace(self._info, backend=encoder_pass.backend)
        self._export_state = "ready"
        self._export_done.set()

    # -- batch pipeline -------------------------------------------------------------------

    def _logits(self, requests: Sequence[TranscriptionRequest]) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC logits (B, T+4, V) and valid lengths, queries included, from one encoder pass."""
        # Read once: a switch to ONNX meanwhile must not split this call across backends.
        encoder_pass = self._pass
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
