"""How the model's compute is spread over CPU cores: model workers x torch threads each.

On CPU, the utterance batches of a streaming service are small (a few seconds of audio), and
torch's intra-op parallelism barely helps at those sizes; independent batches on separate
workers, one thread each, keep every core busy (measured in docs/BENCHMARKS.md). On CUDA one
worker feeds the GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class WorkerPlan:
    workers: int
    threads_per_worker: int


def worker_plan(device: str, workers: int | None = None, threads: int | None = None) -> WorkerPlan:
    """``workers``/``threads`` as configured (None: automatic) for a model on ``device``."""
    if device.startswith("cuda"):
        return WorkerPlan(workers or 1, threads or 1)
    cores = usable_cores()
    n_workers = workers or cores
    return WorkerPlan(n_workers, threads or max(cores // n_workers, 1))


def set_thread_count(threads: int) -> None:
    """Torch intra-op threads for the calling thread's parallel regions (OpenMP keeps it per thread)."""
    torch.set_num_threads(threads)
