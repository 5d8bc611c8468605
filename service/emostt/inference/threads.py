"""How the model's compute is spread over CPU cores: model workers x torch threads each.

On CPU, the utterance batches of a streaming service are small (a few seconds of audio), and
torch's intra-op parallelism barely helps at those sizes; independent batches on separate
workers, one thread each, keep every core busy (measured in docs/BENCHMARKS.md). On CUDA one
worker feeds the GPU.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

log = logging.getLogger(__name__)


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in cores (cgroup v2 ``cpu.max`` or v1 CFS), or None.

    A container limited to 2 CPUs on a 64-core node still sees 64 cores in its affinity mask; one
    worker per visible core would then run 64 workers on 2 CPUs' worth of time.
    """
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        if quota != "max":
            return int(quota) / int(period or "100000")
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def usable_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """Cores this process may use: its affinity mask, capped by its cgroup's CPU quota (rounded
    up: a 1.5-CPU limit still runs two workers, each throttled a little)."""
    cores = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(cgroup_root)
    return cores if limit is None else max(1, min(cores, math.ceil(limit)))


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


def frontend_processes(device: str, configured: int | Literal["auto"], cores: int | None = None) -> int:
    """Front-end processes for ``frontend_processes`` (docs/engine.md, "Front-end processes").

    auto: one on CPU (the model workers need every core, and one front end holds more streams
    than CPU inference serves); on CUDA, one per two cores left after two for the model
    process (GPU feeding, status, pipes), up to 8: the front end, not the GPU, limits a GPU
    server's streams.
    """
    if configured != "auto":
        return configured
    if not device.startswith("cuda") and device != "auto":
        return 1
    if device == "auto" and not torch.cuda.is_available():
        return 1
    spare = (cores if cores is not None else usable_cores()) - 2
    return max(1, min(MAX_AUTO_FRONTENDS, spare // CORES_PER_FRONTEND))


DEFAULT_MAX_BATCH_SIZE = 16


def default_max_batch_size(device: str, backend: str) -> int:
    """ONNX Runtime on CPU costs the same per utterance in a batch as alone (measured), so a
    batch only makes its first utterance wait; torch's int8 kernels and GPUs gain from batches."""
    if backend == "onnx" and not device.startswith("cuda"):
        return 1
    return DEFAULT_MAX_BATCH_SIZE


def set_thread_count(threads: int) -> None:
    """Torch intra-op threads for the calling thread's parallel regions (OpenMP keeps it per thread)."""
    torch.set_num_threads(threads)


LOW_PRIORITY_NICE = 10


def lower_thread_priority() -> None:
    """Nice the calling thread (Linux schedules threads separately), so it yields to the others."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), LOW_PRIORITY_NICE))
    except OSError as exc:  # not permitted in some sandboxes: run at normal priority
        log.warning("could not lower the priority of thread %s: %s", threading.current_thread().name, exc)
