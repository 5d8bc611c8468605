"""``emostt model export MODEL OUT``: a self-contained dir the torch-free engine serves.

The export needs torch and funasr (funasr's exporter traces the fp32 model); serving it does
not. The graph is the one the ONNX cache holds for the model's revision (exported into the
cache first if it is not there, ``onnx_cache.ensure_exported``), so ``emostt serve`` on the
model dir and on the exported dir run the same int8 graph. The other files are found by the
lookup the server makes (``onnx_model.model_dir_files``) and checked against what funasr
itself loaded: a model dir the two read differently is refused, not exported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emostt.errors import ModelLoadError
from emostt.inference.fbank import FrontendConfig
from emostt.inference.model_source import bundled_models, resolve_model
from emostt.inference.onnx_model import OnnxModel, cached_model, write_exported
from emostt.inference.options import EngineOptions
from emostt.inference.serving import cache_root_of


def export_model(spec: str, out: Path, options: EngineOptions, name: str | None = None) -> OnnxModel:
    """Export the model ``spec`` (bundled name, model dir or hub id) to the dir ``out``; ``name``:
    the model's name in results (default: ``spec`` for bundled models and hub ids, the dir's name
    for a model dir)."""
    from emostt.inference.loading import build_with_timeout, verify_checkpoint
    from emostt.inference.onnx_cache import DIGESTS_DIR, cache_dir_for, ensure_exported
    from emostt.inference.revision import model_revision

    source = resolve_model(spec, options.hub)
    if source.exported:
        raise ModelLoadError(f"{spec!r} is already an exported ONNX model dir")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelLoadError(f"{out} exists and is not an empty dir; choose a new output dir")
    auto_model = build_with_timeout(source, "cpu", options.load_timeout_s)
    model_dir = Path(auto_model.kwargs.get("model_path", source.local_dir or ""))
    if not (model_dir / "model.pt").is_file():
        raise ModelLoadError(f"{spec!r} loaded, but from no local model dir to export ({model_dir})")
    verify_checkpoint(auto_model.model, model_dir)
    auto_model.model.eval()
    cache_root = cache_root_of(options)
    revision = model_revision(model_dir, cache_root / DIGESTS_DIR)
    ensure_exported(auto_model, cache_dir_for(cache_root, revision))
    if name is None:
        local = source.local_dir is not None and spec not in bundled_models()
        name = model_dir.name if local else spec
    model = cached_model(model_dir, name, cache_root)
    if model is None:
        raise ModelLoadError(f"the ONNX export of {spec!r} is not in the cache {cache_root} after exporting")
    check_like_funasr(model, auto_model)
    write_exported(model, out)
    return model


def check_like_funasr(model: OnnxModel, auto_model: Any) -> None:
    """ModelLoadError unless ``model``'s tokenizer, CMVN, frontend settings and blank id are the
    ones funasr loaded (``auto_model``: its ``AutoModel``)."""
    kwargs = auto_model.kwargs
    frontend = kwargs.get("frontend")
    funasr_files = (
        _path(kwargs.get("tokenizer_conf", {}).get("bpemodel")),
        _path(kwargs.get("frontend_conf", {}).get("cmvn_file")),
    )
    ours = (model.files.tokenizer.resolve(), model.files.cmvn.resolve() if model.files.cmvn else None)
    problems = []
    if funasr_files != ours:
        problems.append(f"files {ours} where funasr loaded {funasr_files}")
    if frontend is not None:
        theirs = FrontendConfig(
            fs=frontend.fs,
            window=frontend.window,
            n_mels=frontend.n_mels,
            frame_length=frontend.frame_length,
            frame_shift=frontend.frame_shift,
            lfr_m=frontend.lfr_m,
            lfr_n=frontend.lfr_n,
            dither=frontend.dither,
            snip_edges=frontend.snip_edges,
            upscale_samples=frontend.upsacle_samples,
        )
        if theirs != model.files.frontend:
            problems.append(f"frontend {model.files.frontend} where funasr's is {theirs}")
    blank_id = auto_model.model.blank_id
    if blank_id != model.files.blank_id:
        problems.append(f"blank id {model.files.blank_id} where funasr's model has {blank_id}")
    if problems:
        raise ModelLoadError("the exported model would not compute what funasr does: " + "; ".join(problems))


def _path(value: Any) -> Path | None:
    return Path(value).resolve() if isinstance(value, str) and value else None
