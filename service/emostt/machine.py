"""What this machine offers the process: CPU cores under its affinity mask and cgroup quota,
and whether an NVIDIA GPU is present, without importing torch (start-up planning must stay
cheap, and the torch-free CPU path must not load it to count cores)."""

from __future__ import annotations

import math
import os
from pathlib import Path

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


def nvidia_gpu_present(dev: str = "/dev") -> bool:
    """Whether an NVIDIA GPU's device node is visible to this process (``/dev/nvidia0`` ...).

    The NVIDIA container runtime exposes exactly the GPUs a container was given as these nodes,
    so this answers "may CUDA work here" without importing torch; the engine still checks CUDA
    itself when it loads, and fails loudly if the driver is unusable.
    """
    return any(Path(dev).glob("nvidia[0-9]*"))
