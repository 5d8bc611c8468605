"""How a session questions the turn model during a pause: one question out at a time (a slow
model is asked less often, not queued deeper), the next recheck counted from the answer, and a
question still waiting when speech resumes withdrawn. A scripted VAD and a held turn model."""

from __future__ import annotations

import asyncio
from typing import cast

import numpy as np

from emostt.batching.batcher import Batcher
from emostt.streaming import events
from emostt.streaming.protocol import Audio
from emostt.streaming.session import Session
from emostt.streaming.turn_taking import RECHECK_MS
from emostt.streaming.turns import TurnBatcher
from emostt.streaming.vad import VadBatcher
from emostt.vocabulary import VAD_FRAME_MS
from emostt.vocabulary.session_config import SessionConfig
from tests.unit.test_session_turns import RecordingBatcher, ScriptedVad, pcm

FIRST = -(-200 // VAD_FRAME_MS)  # frames of pause before the first question (default min_pause_ms)
AGAIN = -(-RECHECK_MS // VAD_FRAME_MS)  # frames between questions in one pause


class HeldTurnModel:
    """Fault injection: every question waits until the test answers it."""

    def __init__(self) -> None:
        self.questions: list[asyncio.Future[float]] = []
        self.withdrawn = 0

    async def probability(self, audio: np.ndarray) -> float:
        answer = asyncio.get_running_loop().create_future()
        self.questions.append(answer)
        try:
            return await answer
        except asyncio.CancelledError:
            self.withdrawn += 1
            raise

    def waiting(self) -> int:
        return sum(not q.done() for q in self.questions)


def semantic_session() -> tuple[Session, HeldTurnModel, list[events.Event]]:
    sent: list[events.Event] = []

    async def emit(event: events.Event) -> None:
        sent.append(event)

    model = HeldTurnModel()
    config = SessionConfig.model_validate(
        {"turn_detection": {"type": "semantic", "eagerness": "low"}, "vad": {"prefix_padding_ms": 0}}
    )
    s = Session(
        "s1",
        cast(Batcher, RecordingBatcher()),
        cast(VadBatcher, ScriptedVad()),
        emit,
        config,
        speculative_finals=False,
        turns=cast(TurnBatcher, model),
    )
    return s, model, sent


async def settle() -> None:
    """Let the session's tasks run up to their next wait (a question reaching the model, an
    answer reaching the session): a few loop iterations, no wall-clock time involved."""
    for _ in range(5):
        await asyncio.sleep(0)


async def silence(s: Session, frames: int) -> None:
    """Silent VAD frames, one at a time, the session's tasks settling after each."""
    for _ in range(frames):
        await s.handle(Audio(pcm(VAD_FRAME_MS, speech=False)))
        await settle()


async def test_one_question_out_at_a_time_and_the_next_recheck_counts_from_the_answer() -> None:
    s, model, _ = semantic_session()
    await s.handle(Audio(pcm(640, speech=True)))
    await silence(s, FIRST + 4 * AGAIN)  # four rechecks' worth while the model holds
    assert len(model.questions) == 1 and model.waiting() == 1
    model.questions[0].set_result(0.1)  # not complete: the turn stays open
    await settle()
    await silence(s, AGAIN - 1)
    assert len(model.questions) == 1, "the next recheck counts from the answer, not from the question"
    await silence(s, 1)
    assert len(model.questions) == 2 and s.open_utterance == "u1"
    s.abort()  # the session goes: its question with it
    await settle()
    assert model.withdrawn == 1


async def test_a_question_still_waiting_when_speech_resumes_is_withdrawn() -> None:
    s, model, sent = semantic_session()
    await s.handle(Audio(pcm(640, speech=True)))
    await silence(s, FIRST)
    assert model.waiting() == 1
    await s.handle(Audio(pcm(VAD_FRAME_MS, speech=True)))  # the user goes on
    await settle()
    assert model.withdrawn == 1 and model.questions[0].cancelled()
    await silence(s, FIRST)  # the next pause gets its own question
    assert len(model.questions) == 2 and model.waiting() == 1
    model.questions[1].set_result(0.99)  # complete: the turn ends at this pause
    await settle()
    await s.flush()
    assert [e["end_reason"] for e in sent if e["type"] == "final"] == ["turn_model"]
