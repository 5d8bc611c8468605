"""The memory budget of the files in flight: the decoded audio every REST file holds, together.

One process-wide ``FILE_MEMORY`` (the memory is the process's): the decoder reserves each block's
bytes before it keeps them, and a file whose next block does not fit is refused (503 overloaded,
``FileMemoryFullError``) instead of taking the process out of memory. What a decoded file holds is
released when its array is freed (``hold``: a finalizer on the buffer, so every view of it, the
segments' slices included, keeps the reservation), or at once when decoding fails.

Thread-safe: files are decoded in worker threads, and released wherever their last view dies.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque

import numpy as np

from emostt.config import Settings
from emostt.errors import EmosttError

MIB = 1024 * 1024


class FileMemoryFullError(EmosttError):
    """The files in flight already hold the budget; retrying later may succeed."""

    code = "overloaded"
    retryable = True


class MemoryBudget:
    """Bytes reserved against a limit. ``release`` takes no lock: a finalizer may run in any
    thread, at any allocation, even inside ``reserve`` holding the lock; releases queue and are
    counted by the next ``reserve`` or ``held``."""

    def __init__(self, limit_bytes: int) -> None:
        self._lock = threading.Lock()
        self._released: deque[int] = deque()
        self.limit_bytes = limit_bytes
        self._held = 0
        self.peak = 0

    @property
    def held(self) -> int:
        with self._lock:
            return self._count_released()

    def reserve(self, nbytes: int) -> None:
        """``FileMemoryFullError`` when ``nbytes`` more would go past the limit."""
        with self._lock:
            held = self._count_released()
            if held + nbytes <= self.limit_bytes:
                self._held = held + nbytes
                self.peak = max(self.peak, self._held)
                return
        raise FileMemoryFullError(
            f"the files being transcribed hold {held / MIB:.0f} MiB of decoded audio and this "
            f"one needs more; this server allows {self.limit_bytes / MIB:.0f} MiB: retry later"
        )

    def release(self, nbytes: int) -> None:
        self._released.append(nbytes)  # atomic

    def _count_released(self) -> int:
        while self._released:
            self._held -= self._released.popleft()
        return self._held


FILE_MEMORY = MemoryBudget(int(Settings.model_fields["max_file_memory_mb"].default) * MIB)


def configure_file_memory(max_file_memory_mb: int) -> None:
    """Set ``FILE_MEMORY``'s limit (``Settings.max_file_memory_mb``); files in flight keep theirs."""
    FILE_MEMORY.limit_bytes = max_file_memory_mb * MIB


def hold(buffer: np.ndarray, budget: MemoryBudget, nbytes: int) -> None:
    """``nbytes`` of ``budget`` stay reserved until ``buffer`` (and every view of it) is freed."""
    weakref.finalize(buffer, budget.release, nbytes)
