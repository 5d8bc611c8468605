"""Where a model comes from: a local dir, a bundled model, or a hub id. No torch here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emostt.errors import ModelLoadError
from emostt.vocabulary import DEFAULT_MODEL

BUNDLED_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
REQUIRED_FILES = ("config.yaml", "model.pt")
# What marks a dir written by ``emostt model export`` (``onnx_model.py``): the ONNX graph, the
# tokenizer, the CMVN and this manifest, no model.pt.
EXPORTED_MANIFEST = "emostt-onnx-model.json"


@dataclass(frozen=True)
class ModelSource:
    spec: str
    local_dir: Path | None  # None: a hub id that funasr downloads (or finds in its cache)
    hub: str

    @property
    def is_local(self) -> bool:
        return self.local_dir is not None

    @property
    def exported(self) -> bool:
        """Whether this is an exported ONNX model dir (served by the torch-free engine only)."""
        return self.local_dir is not None and (self.local_dir / EXPORTED_MANIFEST).is_file()


def bundled_models() -> dict[str, Path]:
    if not BUNDLED_MODELS_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(BUNDLED_MODELS_DIR.iterdir()) if (p / "config.yaml").is_file()}


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or Path(spec).exists()


def resolve_model(spec: str, hub: str = "ms") -> ModelSource:
    """Resolve ``spec``: bundled name, local dir (checked now), or hub id (downloaded at load)."""
    if hub not in ("ms", "hf"):
        raise ModelLoadError(f"hub must be 'ms' (ModelScope) or 'hf' (Hugging Face), got {hub!r}")
    bundled = bundled_models()
    if spec in bundled:
        return ModelSource(spec, bundled[spec], hub)
    if _looks_like_path(spec):
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise ModelLoadError(
                f"model dir {str(path)!r} does not exist; pass a SenseVoice model dir, a hub id such as "
                f"{DEFAULT_MODEL!r}, or a bundled model ({', '.join(bundled) or 'none installed'})"
            )
        missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
        if missing and not (path / EXPORTED_MANIFEST).is_file():
            raise ModelLoadError(
                f"model dir {str(path)!r} is missing {', '.join(missing)}; a SenseVoice dir holds "
                "config.yaml, model.pt, am.mvn and the tokenizer model (an exported ONNX dir holds "
                f"{EXPORTED_MANIFEST})"
            )
        return ModelSource(spec, path.resolve(), hub)
    if spec.count("/") != 1:
        raise ModelLoadError(
            f"{spec!r} is neither a model dir nor a hub id (owner/name); "
            f"bundled models: {', '.join(bundled) or 'none'}"
        )
    return ModelSource(spec, None, hub)
