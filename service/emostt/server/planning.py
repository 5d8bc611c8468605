"""How the server spreads its work over the machine: model workers x threads each, front-end
processes, batch sizes. Pure decisions over the machine's facts (``emostt.machine``); no torch.

On CPU, the utterance batches of a streaming service are small (a few seconds of audio), and
intra-op parallelism barely helps at those sizes; independent batches on separate workers, one
thread each, keep every core busy (measured in docs/BENCHMARKS.md). On CUDA one worker feeds
the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from emostt.batching.collate import DEFAULT_MAX_PADDED_SECONDS
from emostt.machine import nvidia_gpu_present, usable_cores


@dataclass(frozen=True)
class WorkerPlan:
    workers: int  # run finals (and partials, when partial_workers is 0)
    partial_workers: int  # run partials only, at a lower OS priority
    threads_per_worker: int


def worker_plan(
    device: str,
    workers: int | None = None,
    threads: int | None = None,
    partial_workers: int | None = None,
) -> WorkerPlan:
    """Workers and threads as configured (None: automatic) for a model on ``device``.

    CPU: one final worker per core, one thread each, plus one low-priority partial worker, so
    partials use the cores finals leave idle. CUDA: one worker feeds the GPU, partials between
    finals.
    """
    if device.startswith("cuda"):
        return WorkerPlan(workers or 1, partial_workers or 0, threads or 1)
    cores = usable_cores()
    n_workers = workers or cores
    n_partial = 1 if partial_workers is None else partial_workers
    return WorkerPlan(n_workers, n_partial, threads or max(cores // n_workers, 1))


# Cores one front-end process uses at full load: its event loop and its VAD thread.
CORES_PER_FRONTEND = 2
MAX_AUTO_FRONTENDS = 8


def frontend_processes(
    device: str,
    configured: int | Literal["auto"],
    cores: int | None = None,
    gpu_present: bool | None = None,
) -> int:
    """Front-end processes for ``frontend_processes`` (docs/engine.md, "Front-end processes").

    auto: one on CPU (the model workers need every core, and one front end holds more streams
    than CPU inference serves); on CUDA, one per two cores left after two for the model
    process (GPU feeding, status, pipes), up to 8: the front end, not the GPU, limits a GPU
    server's streams. Device ``auto`` counts as CUDA when an NVIDIA GPU is visible.
    """
    if configured != "auto":
        return configured
    if device == "auto":
        on_gpu = nvidia_gpu_present() if gpu_present is None else gpu_present
    else:
        on_gpu = device.startswith("cuda")
    if not on_gpu:
        return 1
    spare = (cores if cores is not None else usable_cores()) - 2
    return max(1, min(MAX_AUTO_FRONTENDS, spare // CORES_PER_FRONTEND))


# ONNX Runtime on the CPU: batching short utterances saves compute (2 s clips: 15 % less CPU per
# utterance in batches of 4 or more), long ones gain nothing (10 s clips: within 5 %) and only
# make the batch's first utterance wait; a batch holds at most this much padded audio.
CPU_ONNX_MAX_PADDED_SECONDS = 8.0


def default_max_padded_seconds(device: str, backend: str) -> float:
    """Batch size x longest utterance: 8 s with ONNX Runtime on the CPU, else 160 s (docs/engine.md,
    "CPU threads")."""
    if backend == "onnx" and not device.startswith("cuda"):
        return CPU_ONNX_MAX_PADDED_SECONDS
    return DEFAULT_MAX_PADDED_SECONDS
