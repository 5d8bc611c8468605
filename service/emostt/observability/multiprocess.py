"""Metrics when front-end processes serve the connections (frontends.py).

prometheus_client's multiprocess mode: every process writes its samples to memory-mapped
files in one directory, and ``/metrics`` (served by whichever front end the scrape reaches)
aggregates them, so a scrape sees the whole server. Gauges say how their per-process values
combine (``multiprocess_mode`` in metrics.py). The mode is chosen when prometheus_client is
first imported, from ``PROMETHEUS_MULTIPROC_DIR``: ``enable`` must run before that.

The per-process ``process_*`` collectors do not exist in that mode; ``ServerProcesses``
exports ``process_cpu_seconds_total`` and ``process_resident_memory_bytes`` summed over the
model process and its front ends instead, so dashboards keep one series per server.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

ENV = "PROMETHEUS_MULTIPROC_DIR"


class MetricsAlreadyImportedError(RuntimeError):
    pass


def enable() -> Path:
    """A fresh metrics directory for this server, exported to its child processes.

    An operator's ``PROMETHEUS_MULTIPROC_DIR`` is used (its old files removed: a previous run's
    samples would count); otherwise a private directory under the temp dir is made."""
    if "prometheus_client" in sys.modules and os.environ.get(ENV) is None:
        raise MetricsAlreadyImportedError(
            "front-end processes need multiprocess metrics, set up before prometheus_client is imported"
        )
    configured = os.environ.get(ENV)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="emostt-metrics-"))
    os.environ[ENV] = str(directory)
    return directory


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def cleanup(directory: Path) -> None:
    """At exit: a private directory is removed; an operator's keeps no files of this run."""
    if directory.name.startswith("emostt-metrics-"):
        shutil.rmtree(directory, ignore_errors=True)
    else:
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)


def mark_dead(pid: int) -> None:
    """A front end exited: its live gauges (open sessions) stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def exposition() -> bytes:
    """The whole server's metrics, aggregated over every process's files."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(ServerProcesses())
    return generate_latest(registry)


def server_pids() -> list[int]:
    """This front end's model process and every child it runs (the front ends)."""
    parent = os.getppid()
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return [parent, os.getpid()]
    return [parent, *map(int, children)]


class ServerProcesses:
    """CPU seconds and resident memory, summed over the server's processes."""

    def collect(self) -> Iterable[Metric]:
        from prometheus_client import ProcessCollector
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        cpu = rss = 0.0
        for pid in server_pids():
            for family in ProcessCollector(pid=functools.partial(int, pid), registry=None).collect():
                if family.name == "process_cpu_seconds":
                    cpu += sum(s.value for s in family.samples)
                elif family.name == "process_resident_memory_bytes":
                    rss += sum(s.value for s in family.samples)
        yield CounterMetricFamily(
            "process_cpu_seconds", "Total user and system CPU time spent in seconds (all processes).", cpu
        )
        yield GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory size in bytes (all processes).", rss
        )
