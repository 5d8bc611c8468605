"""Which engine serves a model: the torch-free engine on the CPU when it can, else torch.

``load_engine`` picks, for ``emostt serve`` and ``emostt transcribe`` alike:

- **torch-free** (``onnx_engine.OnnxEngine``: ONNX Runtime, numpy features and reductions; torch
  and funasr never imported) when the engine runs on the CPU int8 path (device ``cpu``, or
  ``auto`` with no NVIDIA GPU visible; precision ``auto`` or ``int8``; backend ``auto`` or
  ``onnx``) and either ``spec`` is an exported dir (``emostt model export``) or a local model
  dir whose export is in the ONNX cache;
- **torch** (``sensevoice.SenseVoiceEngine``) otherwise: CUDA, fp32, backend torch, a hub id,
  or a model not exported yet (with backend ``auto`` a server then exports in the background
  and switches to ONNX Runtime while serving; the next start is torch-free).

The choice is logged once per engine (``engine: torch-free ...`` or ``engine: torch (why)``).
An exported dir has no torch weights: asked for anything but the CPU int8 path it fails with
a ModelLoadError that says so. A damaged cache entry costs speed, not the start: it is logged
and torch serves, as ``SenseVoiceEngine`` does.

Concurrency: called at start-up (from a worker thread of the event loop); no shared state.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from emostt.errors import ModelLoadError
from emostt.inference.engine import Engine
from emostt.inference.model_source import resolve_model
from emostt.inference.onnx_cache import DIGESTS_DIR, default_cache_root
from emostt.inference.onnx_engine import OnnxEngine
from emostt.inference.onnx_model import OnnxModel, cached_model, read_exported
from emostt.inference.options import EngineOptions
from emostt.inference.ort_session import encoder_threads
from emostt.machine import nvidia_gpu_present

log = logging.getLogger(__name__)


def cpu_int8_problem(options: EngineOptions) -> str | None:
    """Why ``options`` are not the CPU int8 path the torch-free engine serves; None when they are."""
    if options.backend == "torch":
        return "backend torch"
    if options.precision not in ("auto", "int8"):
        return f"precision {options.precision}"
    if options.device == "auto" and nvidia_gpu_present():
        return "device auto with an NVIDIA GPU present"
    if options.device not in ("auto", "cpu"):
        return f"device {options.device}"
    if options.compile:
        return "torch.compile requested"
    return None


def cache_root_of(options: EngineOptions) -> Path:
    return Path(options.onnx_cache_dir) if options.onnx_cache_dir else default_cache_root()


def torch_free_model(spec: str, options: EngineOptions) -> tuple[OnnxModel | None, str]:
    """The model the torch-free engine would serve for ``spec``, or None and why torch serves."""
    source = resolve_model(spec, options.hub)
    problem = cpu_int8_problem(options)
    cache_root = cache_root_of(options)
    if source.exported:
        assert source.local_dir is not None
        if problem is not None:
            raise ModelLoadError(
                f"{spec!r} is an exported ONNX model dir: it serves on the CPU int8 path only "
                f"(device cpu, precision auto or int8, backend auto or onnx), not with {problem}; "
                "pass the model dir it was exported from to run it elsewhere"
            )
        return read_exported(source.local_dir, cache_root / DIGESTS_DIR), ""
    if problem is not None:
        return None, problem
    if source.local_dir is None:
        return None, "a hub id (export it with `emostt model export` to serve it without torch)"
    try:
        model = cached_model(source.local_dir, source.spec, cache_root)
    except ModelLoadError as exc:
        return None, str(exc)
    if model is None:
        return None, "no ONNX export of this model revision is cached yet"
    return model, ""


def load_engine(spec: str, options: EngineOptions) -> Engine:
    """The engine for ``spec``: torch-free where it can serve it, else ``SenseVoiceEngine``."""
    model, why = torch_free_model(spec, options)
    if model is not None:
        try:
            engine = OnnxEngine(
                model, encoder_threads(options.threads, options.lone_call_threads), options.pad_multiple
            )
        except ModelLoadError as exc:
            if model.origin != "ONNX cache":
                raise
            log.error("%s; serving with torch (delete the cache entry to export it again)", exc)
            why = "the cached ONNX export cannot be loaded"
        else:
            log.info(
                "engine: torch-free ONNX Runtime on the CPU, from the %s",
                model.origin,
                extra={
                    "model": engine.info.name,
                    "revision": engine.info.revision,
                    "graph": str(model.graph),
                    "torch_imported": "torch" in sys.modules,
                    "funasr_imported": "funasr" in sys.modules,
                },
            )
            return engine
    try:
        from emostt.inference.sensevoice import SenseVoiceEngine
    except ModuleNotFoundError as exc:  # the slim image: no torch, no funasr
        raise ModelLoadError(
            f"cannot serve {spec!r} without torch: {why}; this installation has no {exc.name} (the "
            "torch-free image serves exported model dirs only: run `emostt model export` where torch "
            "is installed, e.g. the full image, and serve its output)"
        ) from None
    log.info("engine: torch (%s)", why, extra={"model": spec})
    return SenseVoiceEngine.load(spec, options)


def load_with_fallback(spec: str, fallback_model: str | None, options: EngineOptions) -> tuple[Engine, str]:
    """``load_engine(spec)``; when that fails and ``fallback_model`` is set, that model instead,
    loudly. Returns the engine and the spec it was loaded from."""
    try:
        return load_engine(spec, options), spec
    except ModelLoadError as exc:
        if not fallback_model:
            raise
        log.warning("%s -- FALLING BACK to model %r: results do not come from %r", exc, fallback_model, spec)
        return load_engine(fallback_model, options), fallback_model
