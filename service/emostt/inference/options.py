"""How to load a SenseVoice engine: ``EngineOptions``, one frozen value per engine.

The closed sets (hub, precision, backend) are the Literal types of ``emostt.vocabulary``,
the same ones the settings and the CLI use. Immutable, so safe to share between threads.
"""

from __future__ import annotations

from dataclasses import dataclass

from emostt.vocabulary import Backend, Hub, Precision


@dataclass(frozen=True)
class EngineOptions:
    # cpu, cuda[:N] or auto (CUDA when available).
    device: str = "cpu"
    precision: Precision = "auto"
    hub: Hub = "ms"
    threads: int | None = None
    # Threads of the ONNX encoder's wide session for calls that run alone (ort_session.encoder_threads).
    lone_call_threads: int | None = None
    load_timeout_s: float = 900.0
    # Round the padded time axis up to this many frames (shape buckets for compiled encoders).
    pad_multiple: int = 1
    compile: bool = False
    # "auto": onnx on the CPU int8 path when an export is cached, else torch (CUDA, fp32, or
    # nothing cached yet). "torch" never exports. "onnx": the encoder on ONNX Runtime int8
    # (CPU), exported at load unless cached. Exports are cached per model revision in
    # onnx_cache_dir (default ~/.cache/emostt/onnx).
    backend: Backend = "auto"
    onnx_cache_dir: str | None = None
    # With backend auto and nothing cached: export in a background thread and switch to ONNX
    # when done (a server); False serves with torch only (a one-shot CLI run).
    background_export: bool = False
