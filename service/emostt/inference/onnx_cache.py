"""The ONNX export cache: one entry per model revision and exporter versions, written once.

funasr's exporter (``AutoModel.export(type="onnx")``, the path its ONNX runtime and
sherpa-onnx models come from) writes the query embeddings, the SANM encoder and the CTC
projection as one fp32 graph; its MatMuls are then dynamically quantized to int8 with signed
weights (``int8_weights.quantize_encoder``; funasr's own quantization uses unsigned ones). It
takes minutes on the real model, so the result is kept. In the cache root
(EMOSTT_ONNX_CACHE_DIR, default ``~/.cache/emostt/onnx``):

- ``<entry>/``: a finished export (``model_quant.onnx``, then the ``complete`` marker). The
  entry's name is the model's content revision (``revision.py``), the versions of torch,
  onnxruntime and funasr, and the quantization, so a different model, exporter or quantization
  never finds it. Entries of older emostt versions (named by a weaker key) have another shape
  of name and are never read.
- ``.lock-<entry>``: the entry's export lock (``fcntl.flock``).
- ``.export-<entry>.<random>/``: a staging dir, renamed to ``<entry>`` when complete, so a
  crash mid-export never leaves a half-written entry that looks complete.
- ``digests/``: digests of model files whose own dir is read-only (``revision.py``).

Concurrency: one export per entry at a time on a machine. An exporter holds the entry's lock
for the whole export and, once it has the lock, looks at the cache again: a process that
waited finds the export its predecessor finished and uses it. The kernel releases a flock
when the last descriptor of its open file description closes, so an exporter that dies
(SIGKILL included) never leaves a stale lock; lock files stay (unlinking one that another
process waits on would let two exporters in). A staging dir whose entry's lock is free
belongs to a dead exporter and is removed; staging dirs of older emostt versions (no lock)
are removed after ``STALE_STAGING_S``.

This module imports neither torch nor funasr: the export child imports it before it has
loaded them (see ``onnx_export.py``), and the torch-free engine finds its export here.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emostt.errors import ModelLoadError
from emostt.inference.int8_weights import QUANTIZATION, quantize_encoder
from emostt.inference.stdout_guard import stdout_to_stderr

log = logging.getLogger(__name__)

QUANTIZED_FILE = "model_quant.onnx"
FP32_FILE = "model.onnx"  # funasr's exporter's name for the fp32 graph
COMPLETE_MARKER = "complete"
LOCK_PREFIX = ".lock-"
STAGING_PREFIX = ".export-"
DIGESTS_DIR = "digests"

# A staging dir of an older emostt (no lock to ask) untouched this long belongs to a process
# that died mid-export (exporting the real model takes minutes); it holds the fp32 graph,
# about a GB, so it is removed.
STALE_STAGING_S = 24 * 3600.0


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "emostt" / "onnx"


def cache_dir_for(root: Path, revision: str) -> Path:
    """The entry for the model ``revision`` (``revision.model_revision``) under ``root``.

    The exporter's versions come from the installed packages' metadata, not their modules: the
    torch-free engine looks its export up here without importing torch or funasr."""
    import onnxruntime as ort

    # The graph depends on the exporter (torch, funasr) and its quantizer (onnxruntime, how) too.
    torch_version = _installed_version("torch").split("+")[0]
    funasr_version = _installed_version("funasr")
    exporter = f"torch{torch_version}-ort{ort.__version__}-funasr{funasr_version}"
    return root / f"{revision}-{exporter}-{QUANTIZATION}"


def _installed_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def cached_export(cache_dir: Path) -> Path | None:
    """The int8 ONNX file in ``cache_dir`` if a complete export is there, else None."""
    target = cache_dir / QUANTIZED_FILE
    if (cache_dir / COMPLETE_MARKER).is_file() and target.is_file():
        return target
    return None


def prepare_root(cache_dir: Path) -> None:
    """Create the cache root of ``cache_dir``; a clear ModelLoadError where it cannot be written."""
    try:
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(cache_dir, exc) from exc


def lock_path(cache_dir: Path) -> Path:
    return cache_dir.parent / f"{LOCK_PREFIX}{cache_dir.name}"


@contextlib.contextmanager
def export_lock(cache_dir: Path) -> Iterator[int]:
    """Hold ``cache_dir``'s export lock, waiting while another process holds it. Yields the lock
    file's descriptor: a child that inherits it holds the lock too, until both have closed it."""
    path = lock_path(cache_dir)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise _unwritable(cache_dir, exc) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            log.info(
                "another process (pid %s) is exporting this model to ONNX; waiting for it",
                holder,
                extra={"dir": str(cache_dir)},
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        # For the log line above in the next process that waits; the lock is the flock alone.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield fd
    finally:
        os.close(fd)  # releases the flock unless a child still holds the descriptor


def ensure_exported(auto_model: Any, cache_dir: Path) -> Path:
    """The int8 ONNX file for ``auto_model``, exporting it into ``cache_dir`` unless cached.

    ``auto_model.model`` must be the fp32 model (funasr's exporter traces it). Not while torch
    serves in this process: the exporter patches ``torch.nn.Module.__call__`` process-wide;
    use ``onnx_export.export_in_subprocess`` then. Waits while another process exports the
    same entry, then uses its export.
    """
    cached = cached_export(cache_dir)
    if cached is not None:
        return cached
    prepare_root(cache_dir)
    with export_lock(cache_dir):
        return export_locked(auto_model, cache_dir)


def export_locked(auto_model: Any, cache_dir: Path) -> Path:
    """``ensure_exported`` for a caller that holds ``cache_dir``'s export lock."""
    cached = cached_export(cache_dir)
    if cached is not None:  # the previous holder of the lock finished it
        return cached
    target = cache_dir / QUANTIZED_FILE
    try:
        remove_stale_staging(cache_dir.parent, held=cache_dir)
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{cache_dir.name}.", dir=cache_dir.parent))
    except OSError as exc:
        raise _unwritable(cache_dir, exc) from exc
    log.info("exporting the encoder to ONNX (int8), once per model revision", extra={"dir": str(cache_dir)})
    try:
        with stdout_to_stderr():
            auto_model.export(type="onnx", quantize=False, output_dir=str(staging), device="cpu")
        if not (staging / FP32_FILE).is_file():
            raise ModelLoadError(f"funasr's ONNX export wrote no {FP32_FILE}")
        quantize_encoder(staging / FP32_FILE, staging / QUANTIZED_FILE)
        # Only the int8 graph is served; the fp32 export (weights as external data) is not.
        for path in staging.iterdir():
            if path.name != QUANTIZED_FILE:
                path.unlink() if path.is_file() else shutil.rmtree(path)
        (staging / COMPLETE_MARKER).write_text("ok\n")
        _move_into_place(staging, cache_dir)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"ONNX export of the encoder failed: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def staging_dirs(root: Path, cache_dir: Path) -> list[Path]:
    """The staging dirs of ``cache_dir``'s entry (whoever holds its lock may remove them all)."""
    return list(root.glob(f"{STAGING_PREFIX}{cache_dir.name}.*"))


def remove_stale_staging(root: Path, max_age_s: float = STALE_STAGING_S, held: Path | None = None) -> None:
    """Remove the staging dirs under ``root`` that no live export owns: those of ``held`` (an
    entry whose lock the caller holds), those whose entry's lock is free, and lockless ones
    (older emostt) whose newest file is older than ``max_age_s``."""
    for staging in root.glob(f"{STAGING_PREFIX}*"):
        entry, dot, _ = staging.name.removeprefix(STAGING_PREFIX).rpartition(".")
        lock = root / f"{LOCK_PREFIX}{entry}"
        if dot and held is not None and entry == held.name:
            shutil.rmtree(staging, ignore_errors=True)
        elif dot and lock.is_file():
            _remove_if_unlocked(staging, lock)
        elif _age(staging) > max_age_s:
            shutil.rmtree(staging, ignore_errors=True)


def _remove_if_unlocked(staging: Path, lock: Path) -> None:
    """Remove ``staging`` if its entry's lock is free (its exporter is gone), holding the lock
    meanwhile so that no new export of that entry starts while it is removed."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # an export of that entry is running: the dir may be its own
        os.close(fd)
        return
    try:
        shutil.rmtree(staging, ignore_errors=True)
    finally:
        os.close(fd)


def _age(staging: Path) -> float:
    """Seconds since the newest change in ``staging`` (0 when it is gone meanwhile)."""
    try:
        newest = max([staging.stat().st_mtime] + [p.stat().st_mtime for p in staging.iterdir()])
    except OSError:  # removed meanwhile by the process that owns it
        return 0.0
    return time.time() - newest


def _move_into_place(staging: Path, cache_dir: Path) -> None:
    """Rename the complete ``staging`` dir to ``cache_dir``, unless a complete entry is there."""
    if cache_dir.exists():  # an incomplete leftover, or an older emostt finished first (no lock)
        if cached_export(cache_dir) is not None:
            return
        shutil.rmtree(cache_dir, ignore_errors=True)
    try:
        staging.rename(cache_dir)
    except OSError:
        # Another process renamed its complete export in between the check and the rename.
        if cached_export(cache_dir) is None:
            raise


def _unwritable(cache_dir: Path, exc: OSError) -> ModelLoadError:
    return ModelLoadError(f"cannot write the ONNX cache {cache_dir.parent} (EMOSTT_ONNX_CACHE_DIR): {exc}")
