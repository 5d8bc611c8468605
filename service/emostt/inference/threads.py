"""Thread settings of the model's workers: torch's intra-op threads, and a lower OS priority
for work that must yield (partials, the background export). How many workers and threads a
server runs is decided in ``emostt/server/planning.py``.

No torch import here: a server on the torch-free engine (``onnx_engine.py``) never loads it,
and ONNX Runtime sessions have their own thread settings.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)


def set_thread_count(threads: int) -> None:
    """Torch intra-op threads for the calling thread's parallel regions (OpenMP keeps it per thread);
    nothing to set where torch was never imported (the torch-free engine)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


LOW_PRIORITY_NICE = 10


def lower_thread_priority() -> None:
    """Nice the calling thread (Linux schedules threads separately), so it yields to the others."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), LOW_PRIORITY_NICE))
    except OSError as exc:  # not permitted in some sandboxes: run at normal priority
        log.warning("could not lower the priority of thread %s: %s", threading.current_thread().name, exc)
