"""Loading a SenseVoice model through funasr: device and precision checks, a bounded-time
``AutoModel`` build (hub downloads must not hang start-up), and checkpoint verification."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from emostt.errors import ModelLoadError
from emostt.inference.funasr_import import auto_model_class as auto_model_class_
from emostt.inference.funasr_import import stdout_to_stderr
from emostt.inference.model_source import ModelSource

PRECISIONS = ("fp32", "int8", "fp16", "bf16")


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ModelLoadError(f"device must be cpu, cuda[:N] or auto, got {device!r}")
    return device


def resolve_precision(device: str, precision: str) -> str:
    """``auto`` is int8 on the CPU (dynamic quantization, measured fastest there) and fp16 on CUDA."""
    if precision != "auto":
        return precision
    return "int8" if device == "cpu" else "fp16"


def check_precision(device: str, precision: str) -> None:
    if precision not in PRECISIONS:
        raise ModelLoadError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and device != "cpu":
        raise ModelLoadError("int8 dynamic quantization runs on the CPU only; use fp16 or bf16 on CUDA")
    if precision in ("fp16", "bf16") and device == "cpu":
        raise ModelLoadError(f"{precision} is for CUDA; on the CPU use fp32 or int8")


BACKENDS = ("auto", "torch", "onnx")


def check_backend(backend: str, device: str, precision: str) -> None:
    if backend not in BACKENDS:
        raise ModelLoadError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "onnx" and auto_backend(device, precision) != "onnx":
        raise ModelLoadError(
            "backend onnx is the CPU int8 path (device cpu, precision int8 or auto); "
            f"got device {device!r}, precision {precision!r}; use backend auto or torch"
        )


def auto_backend(device: str, precision: str) -> str:
    """What backend ``auto`` aims for: onnx on the CPU int8 path (measured fastest there), else
    torch (CUDA, and fp32 on the CPU, which is the unquantized reference)."""
    return "onnx" if device == "cpu" and precision == "int8" else "torch"


def build_with_timeout(source: ModelSource, device: str, timeout_s: float) -> Any:
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


def verify_checkpoint(model: torch.nn.Module, model_dir: Path) -> None:
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
