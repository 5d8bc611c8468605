"""The CPU encoder pass on ONNX Runtime, int8: exported from the loaded funasr model.

funasr's own exporter (``AutoModel.export(type="onnx", quantize=True)``, the path its ONNX
runtime and sherpa-onnx models come from) writes the query embeddings, the SANM encoder and
the CTC projection as one graph, with the MatMuls dynamically quantized to int8. Exporting
a model takes minutes, so the result is cached per model revision and reused on later
starts; the export is written to a staging directory and renamed into place, so a crash
mid-export never leaves a half-written cache entry that looks complete.

A process that serves while exporting runs the export in a child process
(``export_in_subprocess``): torch's exporter traces by patching ``torch.nn.Module.__call__``
process-wide, which breaks torch forward passes running meanwhile on other threads.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emostt.errors import ModelLoadError
from emostt.inference.funasr_import import stdout_to_stderr
from emostt.inference.threads import LOW_PRIORITY_NICE

log = logging.getLogger(__name__)

QUANTIZED_FILE = "model_quant.onnx"
COMPLETE_MARKER = "complete"


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "emostt" / "onnx"


def cache_dir_for(root: Path, revision: str) -> Path:
    import onnxruntime as ort

    # The graph depends on the exporter (torch) and its quantizer (onnxruntime) as well.
    return root / f"{revision}-torch{torch.__version__.split('+')[0]}-ort{ort.__version__}"


def cached_export(cache_dir: Path) -> Path | None:
    """The int8 ONNX file in ``cache_dir`` if a complete export is there, else None."""
    target = cache_dir / QUANTIZED_FILE
    if (cache_dir / COMPLETE_MARKER).is_file() and target.is_file():
        return target
    return None


# A staging dir untouched this long belongs to a process that died mid-export (exporting the
# real model takes minutes, not hours); it holds the fp32 graph, about a GB, so it is removed.
STALE_STAGING_S = 24 * 3600.0


def remove_stale_staging(root: Path, max_age_s: float = STALE_STAGING_S) -> None:
    """Remove ``.export-*`` dirs under ``root`` whose newest entry is older than ``max_age_s``."""
    now = time.time()
    for staging in root.glob(".export-*"):
        try:
            newest = max([staging.stat().st_mtime] + [p.stat().st_mtime for p in staging.iterdir()])
        except OSError:  # removed meanwhile by the process that owns it
            continue
        if now - newest > max_age_s:
            shutil.rmtree(staging, ignore_errors=True)


def ensure_exported(auto_model: Any, cache_dir: Path) -> Path:
    """The int8 ONNX file for ``auto_model``, exporting it into ``cache_dir`` unless cached.

    ``auto_model.model`` must be the fp32 model (funasr's exporter traces it). Not while torch
    serves in this process (see the module docstring); use ``export_in_subprocess`` then.
    Several processes may export into the same cache at once: each writes its own staging
    dir and the first complete rename wins.
    """
    cached = cached_export(cache_dir)
    if cached is not None:
        return cached
    target = cache_dir / QUANTIZED_FILE
    try:
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(cache_dir.parent)
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=cache_dir.parent))
    except OSError as exc:
        raise ModelLoadError(
            f"cannot write the ONNX cache {cache_dir.parent} (EMOSTT_ONNX_CACHE_DIR): {exc}"
        ) from exc
    log.info("exporting the encoder to ONNX (int8), once per model revision", extra={"dir": str(cache_dir)})
    try:
        with stdout_to_stderr():
            auto_model.export(type="onnx", quantize=True, output_dir=str(staging), device="cpu")
        # Only the int8 graph is served; the fp32 export (weights as external data) is not.
        for path in staging.iterdir():
            if path.name != QUANTIZED_FILE:
                path.unlink() if path.is_file() else shutil.rmtree(path)
        if not (staging / QUANTIZED_FILE).is_file():
            raise ModelLoadError(f"funasr's ONNX export wrote no {QUANTIZED_FILE}")
        (staging / COMPLETE_MARKER).write_text("ok\n")
        _move_into_place(staging, cache_dir)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"ONNX export of the encoder failed: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _move_into_place(staging: Path, cache_dir: Path) -> None:
    """Rename the complete ``staging`` dir to ``cache_dir``, unless another process got there first."""
    if cache_dir.exists():  # an incomplete leftover, or another process finished first
        if cached_export(cache_dir) is not None:
            return
        shutil.rmtree(cache_dir, ignore_errors=True)
    try:
        staging.rename(cache_dir)
    except OSError:
        # Another process renamed its complete export in between the check and the rename.
        if cached_export(cache_dir) is None:
            raise


# An export child still running after this long is stuck: SenseVoiceSmall takes minutes on 2
# idle cores, and the child runs niced, so a busy server can stretch that a lot.
EXPORT_TIMEOUT_S = 3 * 3600.0

# The child lowers its priority before importing anything: numpy and torch start thread
# pools at import, and threads inherit the priority of the thread that starts them.
_CHILD_MAIN = (
    "import os, sys; "
    f"os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), {LOW_PRIORITY_NICE})); "
    "from emostt.inference.onnx_encoder import export_main; sys.exit(export_main(sys.argv[1:]))"
)


def export_in_subprocess(model_dir: Path, cache_dir: Path, timeout_s: float = EXPORT_TIMEOUT_S) -> Path:
    """``ensure_exported`` for the model in the local dir ``model_dir``, in a child process at
    low OS priority. The child loads its own fp32 copy of the model, so the caller need not
    keep one. Blocks until the child exits; ModelLoadError with the child's reason on failure.
    """
    cached = cached_export(cache_dir)
    if cached is not None:
        return cached
    # The child imports this package from wherever the caller did.
    package_root = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-c", _CHILD_MAIN, str(model_dir), str(cache_dir)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed the child
        raise ModelLoadError(f"the ONNX export took longer than {timeout_s:.0f} s and was stopped") from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot start the ONNX export process: {exc}") from exc
    path = cached_export(cache_dir)
    if done.returncode != 0 or path is None:
        reason = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "no message")
        raise ModelLoadError(f"the ONNX export process failed (exit {done.returncode}): {reason}")
    return path


def export_main(argv: list[str]) -> int:
    """The export child (already niced): ``MODEL_DIR CACHE_DIR``; 0 when the cache entry is
    complete. Its last stderr line says why it failed."""
    from emostt.inference.funasr_import import auto_model_class

    model_dir, cache_dir = (Path(arg) for arg in argv)
    if not (model_dir / "config.yaml").is_file():
        print(f"ModelLoadError: {model_dir} is not a model dir (no config.yaml)", file=sys.stderr)
        return 1
    try:
        auto_model = auto_model_class()(
            model=str(model_dir), device="cpu", disable_update=True, disable_pbar=True
        )
        # funasr turns on INFO logging, and ONNX Runtime's quantizer logs every tensor at INFO.
        logging.getLogger().setLevel(logging.WARNING)
        ensure_exported(auto_model, cache_dir)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


class OnnxEncoder:
    """Query frames + encoder + CTC projection in one ONNX Runtime session.

    ``run`` may be called from several model workers at once (ONNX Runtime sessions are
    thread-safe); with one intra-op thread each call runs on its caller's thread.
    """

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(threads, 1)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelLoadError(f"cannot load ONNX encoder {path}: {exc}") from exc
        self.path = path

    def run(
        self, feats: torch.Tensor, lengths: torch.Tensor, language: np.ndarray, text_norm: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC logits (B, T+4, V) and their valid lengths, like the torch encoder pass."""
        logits, out_lens = self._session.run(
            None,
            {
                "speech": feats.numpy().astype(np.float32, copy=False),
                "speech_lengths": lengths.numpy().astype(np.int32, copy=False),
                "language": language.astype(np.int32, copy=False),
                "textnorm": text_norm.astype(np.int32, copy=False),
            },
        )
        return torch.from_numpy(logits), torch.from_numpy(out_lens)
