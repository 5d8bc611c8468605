from __future__ import annotations

import os
import threading
from pathlib import Path

from emostt.batching.collate import DEFAULT_MAX_PADDED_SECONDS
from emostt.inference.threads import LOW_PRIORITY_NICE, lower_thread_priority
from emostt.machine import cgroup_cpu_limit, nvidia_gpu_present, usable_cores
from emostt.server.planning import (
    CPU_ONNX_MAX_PADDED_SECONDS,
    default_max_padded_seconds,
    frontend_processes,
    worker_plan,
)


def test_cpu_plan_is_one_single_threaded_final_worker_per_core_plus_a_partial_worker() -> None:
    plan = worker_plan("cpu")
    assert plan.workers == usable_cores()
    assert plan.threads_per_worker == 1
    assert plan.partial_workers == 1


def test_a_cgroup_v2_cpu_quota_caps_the_cores_used(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    # Rounded up, never more than the affinity mask allows.
    assert usable_cores(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert usable_cores(tmp_path) == len(os.sched_getaffinity(0))


def test_a_cgroup_v1_cfs_quota_caps_the_cores_used(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 0.5
    assert usable_cores(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no limit"
    assert cgroup_cpu_limit(tmp_path) is None


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path) is None
    assert usable_cores(tmp_path) == len(os.sched_getaffinity(0))


def test_cuda_plan_is_one_worker_with_partials_between_finals() -> None:
    plan = worker_plan("cuda:0")
    assert (plan.workers, plan.partial_workers) == (1, 0)


def test_settings_override_the_plan() -> None:
    plan = worker_plan("cpu", workers=1, threads=None, partial_workers=0)
    assert (plan.workers, plan.partial_workers, plan.threads_per_worker) == (1, 0, usable_cores())
    assert worker_plan("cpu", workers=2, threads=3).threads_per_worker == 3


def test_lower_thread_priority_nices_only_the_calling_thread() -> None:
    seen: dict[str, int] = {}

    def worker() -> None:
        lower_thread_priority()
        seen["worker"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["worker"] == max(before, LOW_PRIORITY_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before, "the caller is untouched"


def test_only_onnx_on_cpu_keeps_batches_to_short_utterances() -> None:
    assert default_max_padded_seconds("cpu", "onnx") == CPU_ONNX_MAX_PADDED_SECONDS == 8.0
    assert default_max_padded_seconds("cpu", "torch") == DEFAULT_MAX_PADDED_SECONDS
    assert default_max_padded_seconds("cuda:0", "torch") == DEFAULT_MAX_PADDED_SECONDS


def test_one_front_end_process_on_cpu_and_one_per_two_spare_cores_on_cuda() -> None:
    assert frontend_processes("cpu", "auto", cores=64) == 1, "CPU inference needs the cores"
    assert frontend_processes("cuda:0", "auto", cores=16) == 7, "two cores for the model process"
    assert frontend_processes("cuda", "auto", cores=4) == 1
    assert frontend_processes("cuda", "auto", cores=96) == 8, "capped"
    assert frontend_processes("cpu", 3, cores=2) == 3, "a configured count is used as is"


def test_device_auto_plans_front_ends_for_a_gpu_only_when_one_is_visible(tmp_path: Path) -> None:
    assert frontend_processes("auto", "auto", cores=16, gpu_present=False) == 1
    assert frontend_processes("auto", "auto", cores=16, gpu_present=True) == 7
    assert not nvidia_gpu_present(str(tmp_path))
    (tmp_path / "nvidiactl").touch()
    assert not nvidia_gpu_present(str(tmp_path)), "the control node alone is not a GPU"
    (tmp_path / "nvidia0").touch()
    assert nvidia_gpu_present(str(tmp_path))
