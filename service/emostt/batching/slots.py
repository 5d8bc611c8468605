"""Counters every front-end process shares with the model process, in shared memory.

Each front end writes only its own slot (a single writer per value: no lock); the model
process and every front end read the sums. Open sessions are read at every admission, so a
session opened on one front end counts against ``max_connections`` on all of them at once;
speech seconds are cumulative per slot and the model process feeds their increase to the
capacity model. A slot is zeroed before a restarted front end takes it over.
"""

from __future__ import annotations

import ctypes
from multiprocessing.context import SpawnContext
from typing import Any


class FrontendSlots:
    def __init__(self, ctx: SpawnContext, count: int) -> None:
        self.count = count
        # Passed to the front-end processes as Process arguments (shared, not copied).
        self._sessions: Any = ctx.RawArray(ctypes.c_int64, count)
        self._speech_s: Any = ctx.RawArray(ctypes.c_double, count)

    def reset(self, index: int) -> None:
        self._sessions[index] = 0
        self._speech_s[index] = 0.0

    def set_sessions(self, index: int, sessions: int) -> None:
        self._sessions[index] = sessions

    def sessions(self, index: int) -> int:
        return int(self._sessions[index])

    def total_sessions(self) -> int:
        return int(sum(self._sessions))

    def add_speech(self, index: int, audio_s: float) -> None:
        self._speech_s[index] += audio_s

    def speech_s(self) -> list[float]:
        """Cumulative speech seconds per slot."""
        return list(self._speech_s)
