"""The CPU encoder pass on ONNX Runtime, int8: exported from the loaded funasr model.

funasr's own exporter (``AutoModel.export(type="onnx", quantize=True)``, the path its ONNX
runtime and sherpa-onnx models come from) writes the query embeddings, the SANM encoder and
the CTC projection as one graph, with the MatMuls dynamically quantized to int8. Exporting
a model takes minutes, so the result is cached per model revision and reused on later
starts; the export is written to a staging directory and renamed into place, so a crash
mid-export never leaves a half-written cache entry that looks complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emostt.errors import ModelLoadError
from emostt.inference.funasr_import import stdout_to_stderr

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


def ensure_exported(auto_model: Any, cache_dir: Path) -> Path:
    """The int8 ONNX file for ``auto_model``, exporting it into ``cache_dir`` unless cached."""
    target = cache_dir / QUANTIZED_FILE
    if (cache_dir / COMPLETE_MARKER).is_file() and target.is_file():
        return target
    try:
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
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
        if cache_dir.exists():  # an incomplete leftover, or another process finished first
            if (cache_dir / COMPLETE_MARKER).is_file():
                return target
            shutil.rmtree(cache_dir)
        staging.rename(cache_dir)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"ONNX export of the encoder failed: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


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
