"""Counters every front-end process shares with the model process, in shared memory.

Each front end writes only its own slot (a single writer per value: no lock); the model
process and every front end read the sums. Open sessions are read at every admission, so a
session opened on one front end counts against ``max_connections`` on all of them at once;
speech seconds are cumulative per slot and the model process feeds their increase to the
capacity model. A slot is zeroed before a restarted front end takes it over.

Each slot also holds the front end's heartbeat: the ``time.monotonic()`` of its event loop's
latest beat (CLOCK_MONOTONIC is one clock for every process on the machine), zero until the
front end serves. The model process's supervisor reads it to tell a front end that never
started from one that crashed after serving, and a hung one from a live one (frontends.py).
"""

from __future__ import annotations

import ctypes
import time
from multiprocessing.context import SpawnContext
from typing import Any


class FrontendSlots:
    def __init__(self, ctx: SpawnContext, count: int) -> None:
        self.count = count
        # Passed to the front-end processes as Process arguments (shared, not copied).
        self._sessions: Any = ctx.RawArray(ctypes.c_int64, count)
        self._speech_s: Any = ctx.RawArray(ctypes.c_double, count)
        self._beats: Any = ctx.RawArray(ctypes.c_double, count)

    def reset(self, index: int) -> None:
        self._sessions[index] = 0
        self._speech_s[index] = 0.0
        self._beats[index] = 0.0

    def beat(self, index: int) -> None:
        """The front end's event loop runs (and it serves)."""
        self._beats[index] = time.monotonic()

    def last_beat(self, index: int) -> float | None:
        """When front end ``index`` last beat (``time.monotonic()``); None: it has not served yet."""
        beat = float(self._beats[index])
        return beat if beat > 0 else None

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
