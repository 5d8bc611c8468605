"""A model as the torch-free engine loads it: the int8 ONNX graph, the tokenizer, the CMVN,
the frontend settings and the model's identity, found without torch or funasr.

Two places hold one:

- **an exported dir**, written by ``emostt model export MODEL OUT`` (``model_export.py``): the
  int8 graph the ONNX cache holds for the model (``model_quant.onnx``), its sentencepiece model,
  its ``am.mvn``, and ``emostt-onnx-model.json``, the manifest: the format, the model's name and
  revision (the content digest of the dir it was exported from, ``revision.py``), the graph's
  quantization (``int8_weights.py``; dirs written before it was recorded hold funasr's), the frontend
  settings (config.yaml's ``frontend_conf`` with funasr's defaults filled in), the blank id, the
  exporter's versions, and each file's name and SHA-256. Loading checks every file against its
  digest (digests of large files are remembered beside them, as ``revision.py`` does), so a
  result's revision names the weights that computed it;
- **a model dir whose export is in the ONNX cache** (``onnx_cache.py``): the graph from the cache
  entry of the dir's revision, the rest from the dir, read the way funasr reads it
  (``model_dir_files``: configuration.json's ``file_path_metas``, else config.yaml and funasr's
  default file names).

Concurrency: pure functions of files; any thread may call them.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from emostt.errors import ModelLoadError
from emostt.inference.fbank import FrontendConfig
from emostt.inference.int8_weights import FUNASR_QUANTIZATION, QUANTIZATION
from emostt.inference.model_source import EXPORTED_MANIFEST
from emostt.inference.onnx_cache import DIGESTS_DIR, QUANTIZED_FILE, cache_dir_for, cached_export
from emostt.inference.revision import file_digest, model_revision

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "emostt-onnx-model-1"
# funasr's classes that the torch-free engine reimplements (features, tokenizer).
FRONTENDS = ("WavFrontend", "wav_frontend")
TOKENIZERS = ("SentencepiecesTokenizer",)
EXPORTED_CMVN = "am.mvn"


@dataclass(frozen=True)
class ModelFiles:
    """What a SenseVoice model dir holds besides its weights, as funasr resolves it."""

    tokenizer: Path
    cmvn: Path | None
    frontend: FrontendConfig
    blank_id: int


@dataclass(frozen=True)
class OnnxModel:
    """Everything the torch-free engine loads; ``origin`` says where it was found."""

    name: str
    revision: str
    graph: Path
    files: ModelFiles
    origin: str
    quantization: str = QUANTIZATION


def model_dir_files(model_dir: Path) -> ModelFiles:
    """The tokenizer, CMVN, frontend settings and blank id of the SenseVoice dir ``model_dir``,
    resolved as funasr's ``AutoModel`` resolves them; ModelLoadError when the torch-free engine
    cannot serve it (another frontend or tokenizer, files missing)."""
    metas: dict[str, Any] = {}
    configuration = model_dir / "configuration.json"
    if configuration.is_file():
        metas = _mapping(_load(configuration, json.loads).get("file_path_metas"))
    config_path = model_dir / str(metas.get("config") or "config.yaml")
    config = _load(config_path, yaml.safe_load)
    tokenizer_conf = _mapping(config.get("tokenizer_conf"))
    frontend_conf = _mapping(config.get("frontend_conf"))
    if config.get("frontend") not in FRONTENDS or config.get("tokenizer") not in TOKENIZERS:
        raise ModelLoadError(
            f"{model_dir}: the torch-free engine serves SenseVoice dirs with funasr's WavFrontend and "
            f"SentencepiecesTokenizer, not {config.get('frontend')!r} and {config.get('tokenizer')!r}"
        )
    if configuration.is_file():
        # funasr: each file_path_metas entry that exists in the dir replaces config.yaml's value.
        tokenizer = _in_dir(model_dir, _mapping(metas.get("tokenizer_conf")).get("bpemodel"))
        cmvn = _in_dir(model_dir, _mapping(metas.get("frontend_conf")).get("cmvn_file"))
    else:
        # funasr: without configuration.json, files with these default names replace config.yaml's.
        tokenizer = _in_dir(model_dir, "bpe.model")
        cmvn = _in_dir(model_dir, EXPORTED_CMVN)
    tokenizer = tokenizer or _configured(model_dir, tokenizer_conf.get("bpemodel"))
    cmvn = cmvn or _configured(model_dir, frontend_conf.get("cmvn_file"))
    if tokenizer is None or not tokenizer.is_file():
        raise ModelLoadError(f"{model_dir}: no sentencepiece model (tokenizer_conf.bpemodel)")
    if cmvn is not None and not cmvn.is_file():
        raise ModelLoadError(f"{model_dir}: the CMVN file {cmvn} does not exist")
    blank_id = int(_mapping(config.get("model_conf")).get("blank_id") or 0)
    return ModelFiles(tokenizer, cmvn, FrontendConfig.from_conf(frontend_conf), blank_id)


def cached_model(model_dir: Path, name: str, cache_root: Path) -> OnnxModel | None:
    """The model in ``model_dir`` with its int8 graph from the ONNX cache under ``cache_root``;
    None when no export of its revision is cached."""
    files = model_dir_files(model_dir)
    revision = model_revision(model_dir, cache_root / DIGESTS_DIR)
    graph = cached_export(cache_dir_for(cache_root, revision))
    if graph is None:
        return None
    return OnnxModel(name, revision, graph, files, "ONNX cache")


def read_exported(export_dir: Path, memo_dir: Path | None = None) -> OnnxModel:
    """The model in the exported dir ``export_dir``, each file checked against the manifest's
    digest (remembered beside large files, or in ``memo_dir`` where the dir is read-only)."""
    manifest_path = export_dir / EXPORTED_MANIFEST
    manifest = _load(manifest_path, json.loads)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ModelLoadError(
            f"{manifest_path}: format {manifest.get('format')!r}, this emostt reads {MANIFEST_FORMAT!r}; "
            "export the model again with `emostt model export`"
        )
    paths = {}
    for role in ("graph", "tokenizer", "cmvn"):
        entry = manifest.get(role)
        if entry is None and role == "cmvn":
            continue
        entry = _mapping(entry)
        path = export_dir / str(entry.get("file"))
        if not path.is_file():
            raise ModelLoadError(f"{export_dir}: the exported {role} {path.name} is missing")
        if file_digest(path, memo_dir) != entry.get("sha256"):
            raise ModelLoadError(f"{path} differs from the file exported (SHA-256); export the model again")
        paths[role] = path
    try:
        files = ModelFiles(
            paths["tokenizer"],
            paths.get("cmvn"),
            FrontendConfig.from_conf(_mapping(manifest.get("frontend"))),
            int(manifest["blank_id"]),
        )
        name, revision = str(manifest["name"]), str(manifest["revision"])
        quantization = str(manifest.get("quantization", FUNASR_QUANTIZATION))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{manifest_path} is malformed: {exc!r}") from exc
    if quantization != QUANTIZATION:
        log.warning(
            "this exported dir's graph is quantized %s; `emostt model export` now writes %s graphs, "
            "which decode up to 3x faster on x86 CPUs with VNNI or AMX: export it again",
            quantization,
            QUANTIZATION,
            extra={"dir": str(export_dir)},
        )
    return OnnxModel(name, revision, paths["graph"], files, "exported dir", quantization)


def write_exported(model: OnnxModel, out: Path) -> Path:
    """Write ``model`` as an exported dir at ``out`` (which must not exist, or be empty): the
    files are copied into a staging dir beside it, which is renamed to ``out`` when complete."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelLoadError(f"{out} exists and is not an empty dir; choose a new output dir")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    # mkdtemp makes the dir private (0700); an export is read by servers that may run as another
    # user (a container mounting it read-only), like the files in it (copied with the umask).
    staging.chmod(0o755)
    try:
        copies = {"graph": (model.graph, QUANTIZED_FILE), "tokenizer": (model.files.tokenizer, None)}
        if model.files.cmvn is not None:
            copies["cmvn"] = (model.files.cmvn, EXPORTED_CMVN)
        entries: dict[str, Any] = {}
        for role, (source, name) in copies.items():
            target = staging / (name or source.name)
            shutil.copyfile(source, target)
            entries[role] = {"file": target.name, "sha256": file_digest(target)}
        entries.setdefault("cmvn", None)
        manifest = {
            "format": MANIFEST_FORMAT,
            "name": model.name,
            "revision": model.revision,
            "quantization": model.quantization,
            **entries,
            "frontend": model.files.frontend.to_conf(),
            "blank_id": model.files.blank_id,
            "exported_with": {pkg: _version(pkg) for pkg in ("emostt", "torch", "funasr", "onnxruntime")},
        }
        (staging / EXPORTED_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _load(path: Path, parse: Any) -> dict[str, Any]:
    try:
        value = parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    return _mapping(value)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _in_dir(model_dir: Path, name: Any) -> Path | None:
    """``model_dir / name`` where ``name`` is a string naming an existing file, else None."""
    if not isinstance(name, str) or not name:
        return None
    path = model_dir / name
    return path if path.is_file() else None


def _configured(model_dir: Path, value: Any) -> Path | None:
    """A path from config.yaml: as written (funasr opens it as is), or inside the model dir."""
    if not isinstance(value, str) or not value:
        return None
    path = Path(value)
    return path if path.is_absolute() or path.is_file() else model_dir / value
