"""The session's OpenAI Realtime hooks with a scripted VAD and model: manual turns (commits end
turns; partials wait for speech), discard (clear), and speech_ended before each final."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from emostt.batching.batcher import Batcher
from emostt.inference.engine import Distribution, TranscriptionRequest, TranscriptionResult
from emostt.policy.outcome import Outcome, Served
from emostt.streaming import events
from emostt.streaming.protocol import Audio, Control
from emostt.streaming.session import Session
from emostt.streaming.vad import VadBatcher, VadStream
from emostt.vocabulary import VAD_FRAME_MS, VAD_FRAME_SAMPLES
from emostt.vocabulary.session_config import SessionConfig

FRAME_BYTES = VAD_FRAME_SAMPLES * 2  # 16 kHz PCM16


class ScriptedVad:
    """Speech probability per frame from a script: 1 where the PCM is non-zero, else 0."""

    async def speech_probs(self, stream: VadStream, frames: npt.NDArray[np.float32]) -> list[float]:
        await asyncio.sleep(0)  # the real VAD answers from its thread: the session yields here
        return [1.0 if np.abs(frame).max() > 0 else 0.0 for frame in frames]


class RecordingBatcher:
    """Answers every request at once with its audio length as text, and records it."""

    partial_interval_scale = 1.0

    def __init__(self) -> None:
        self.requests: list[tuple[bool, int]] = []  # (is_final, samples)

    def record_speech(self, audio_s: float) -> None:
        pass

    def submit(
        self, request: TranscriptionRequest, *, is_final: bool, session_id: str = ""
    ) -> Awaitable[Outcome]:
        self.requests.append((is_final, len(request.audio)))  # asked for, whether or not it runs
        return self._answer(request)

    async def _answer(self, request: TranscriptionRequest) -> Outcome:
        dist = Distribution("neutral", {"neutral": 1.0})
        lang = Distribution("en", {"en": 1.0})
        return Served(TranscriptionResult(f"n{len(request.audio)}", lang, dist, dist, 0.9, 0))

    def partials(self) -> list[int]:
        """The audio lengths (ms) of the partials asked for."""
        return [samples // 16 for final, samples in self.requests if not final]


def pcm(ms: int, speech: bool) -> bytes:
    frames = ms // VAD_FRAME_MS
    samples = np.full(frames * VAD_FRAME_SAMPLES, 1000 if speech else 0, dtype="<i2")
    return samples.tobytes()


def session(**config: Any) -> tuple[Session, RecordingBatcher, list[events.Event]]:
    sent: list[events.Event] = []

    async def emit(event: events.Event) -> None:
        sent.append(event)

    batcher = RecordingBatcher()
    cfg = SessionConfig.model_validate({"partial_interval_ms": 200, **config})
    s = Session(
        "s1",
        cast(Batcher, batcher),
        cast(VadBatcher, ScriptedVad()),
        emit,
        cfg,
        speculative_finals=False,
        endpoint_events=True,
    )
    return s, batcher, sent


def kinds(sent: list[events.Event]) -> list[str]:
    return [e["type"] for e in sent]


async def test_manual_turns_take_all_audio_and_end_on_finalize() -> None:
    s, batcher, sent = session()
    s.set_manual_turns(True)
    for _ in range(10):  # 3.2 s of silence: the turn is open
        await s.handle(Audio(pcm(320, speech=False)))
    assert s.open_utterance == "u1"
    await s.handle(Audio(pcm(640, speech=True)))
    await s.handle(Audio(pcm(1000, speech=False)))  # silence does not end a manual turn
    assert s.open_utterance == "u1"
    await s.handle(Control("finalize"))
    await s.flush()
    # No partial decoded the silence; once speech came, partials covered the whole turn so far.
    assert batcher.partials() and min(batcher.partials()) >= 3200 + 320
    assert kinds(sent)[-2:] == ["speech_ended", "final"]
    assert sent[-2]["end_reason"] == "finalize" and sent[-2]["audio_end_ms"] == s.audio_ms
    assert batcher.requests[-1] == (True, s.audio_ms * 16)  # every sample since the session began


async def test_server_vad_turns_end_on_silence_with_speech_ended_first() -> None:
    s, _, sent = session(vad={"silence_duration_ms": 320, "prefix_padding_ms": 0})
    await s.handle(Audio(pcm(320, speech=False) + pcm(640, speech=True) + pcm(640, speech=False)))
    await s.flush()
    turn = [e for e in sent if e["type"] != "partial"]
    assert kinds(turn) == ["speech_started", "speech_ended", "final"]
    assert turn[1]["end_reason"] == "silence" and turn[1]["utterance_id"] == turn[2]["utterance_id"]


async def test_discard_drops_the_open_turn_without_a_result() -> None:
    s, batcher, sent = session(vad={"prefix_padding_ms": 0})
    await s.handle(Audio(pcm(640, speech=True)))
    assert s.discard() == "u1" and s.open_utterance is None and s.unfinished == 0
    assert s.discard() is None
    await s.handle(Audio(pcm(640, speech=True) + pcm(1000, speech=False)))
    await s.flush()
    assert [e["utterance_id"] for e in sent if e["type"] == "final"] == ["u2"]
    assert not [final for final, _ in batcher.requests if final][1:]  # one final: u2's
