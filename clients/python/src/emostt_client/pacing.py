"""How fast a clip is sent: ``Pacing`` (real time, or as fast as the server's rate limit safely
allows), and a clip turned into the PCM16 a session takes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from emostt_client.audio import resample, to_pcm16

__all__ = ["FAST", "REALTIME", "Pacing", "SessionClock", "clip_pcm16"]


@dataclass(frozen=True)
class Pacing:
    """Send audio at ``speed`` x real time, after ``burst_s`` seconds sent at once per session."""

    speed: float
    burst_s: float = 0.0

    def __post_init__(self) -> None:
        if self.speed <= 0 or self.burst_s < 0:
            raise ValueError("speed must be > 0 and burst_s >= 0")


REALTIME = Pacing(1.0)
# The server closes a session whose audio outruns burst_audio_s + max_realtime_factor x elapsed
# time (defaults 5 s and 2x). The client's clock starts after the server's, so staying under
# both defaults with a margin never trips the limit.
FAST = Pacing(1.8, 4.0)


def clip_pcm16(audio: npt.NDArray[Any], rate: int, target: int, trailing_silence_s: float) -> bytes:
    """Mono samples (float in [-1, 1], or int16) at ``rate`` -> PCM16 at ``target``, followed by
    ``trailing_silence_s`` of silence (so that the endpointer closes the last utterance)."""
    if audio.dtype == np.int16:
        audio = audio.astype(np.float32) / 32768
    audio = resample(np.asarray(audio, dtype=np.float32), rate, target)
    if trailing_silence_s > 0:
        audio = np.concatenate((audio, np.zeros(round(trailing_silence_s * target), dtype=np.float32)))
    return to_pcm16(audio)


@dataclass
class SessionClock:
    """Pacing's view of the current session: which one it is (a reconnect opens another), when it
    opened (on the event loop's clock), the seconds of audio sent to it and its sample rate."""

    rate: int
    generation: int = 0
    opened_at: float = 0.0
    audio_s: float = 0.0

    def restart(self, rate: int, now: float) -> None:
        self.generation += 1
        self.opened_at, self.audio_s, self.rate = now, 0.0, rate

    def count(self, pcm_bytes: int) -> None:
        self.audio_s += pcm_bytes / (2 * self.rate)

    async def pace(self, chunk_s: float, pacing: Pacing, connected: Callable[[], Awaitable[object]]) -> None:
        """Wait until ``chunk_s`` more seconds may be sent at ``pacing``, once ``connected()``
        returned; a reconnect meanwhile opens a new session, paced against its own clock."""
        loop = asyncio.get_running_loop()
        while True:
            await connected()
            generation = self.generation
            due = self.opened_at + (self.audio_s + chunk_s - pacing.burst_s) / pacing.speed
            if due <= loop.time():
                return
            await asyncio.sleep(due - loop.time())
            if generation == self.generation:
                return
