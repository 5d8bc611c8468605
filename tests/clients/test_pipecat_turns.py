"""The Pipecat service with semantic turns, in a real Pipecat pipeline (its PipelineWorker, its
user aggregator and turn strategies) against a scripted server that speaks the contract
(tests/clients/turn_server.py): emostt owns the turn. The eager ends of turn are
``EagerTranscriptionFrame``s, the resumed turn withdraws the first one
(``EagerEndOfTurnCancelFrame``), and the final is a ``TranscriptionFrame`` then the proposed turn
stop, which Pipecat's user aggregator resolves into ``UserStoppedSpeakingFrame``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    EagerTranscriptionFrame,
    ErrorFrame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    LLMContextFrame,
    ProposedUserStartedSpeakingFrame,
    ProposedUserStoppedSpeakingFrame,
    STTMetadataFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregator
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.turns.user_turn_strategies import EagerUserTurnStrategies, ExternalUserTurnStrategies
from pipecat_emostt import EmosttSTTService

from tests.clients.turn_server import (
    EAGER_CONFIDENCES,
    EAGER_TEXT,
    END_OF_TURN_CONFIDENCE,
    FINAL_TEXT,
    turn_server,
)
from tests.pipecat.harness import Collector, pipeline

SEMANTIC = {"type": "semantic", "eagerness": "high"}
SILENCE = InputAudioRawFrame(audio=b"\x00\x00" * 320, sample_rate=16000, num_channels=1)  # 20 ms
TURN_FRAMES = (
    ProposedUserStartedSpeakingFrame,
    EagerTranscriptionFrame,
    EagerEndOfTurnCancelFrame,
    TranscriptionFrame,
    ProposedUserStoppedSpeakingFrame,
)


@asynccontextmanager
async def turn_pipeline(*processors: FrameProcessor) -> AsyncIterator[list[ErrorFrame]]:
    """A running pipeline over ``processors``, the turn server's turn started (it plays it at the
    first audio); the ErrorFrames that reached it."""
    async with pipeline(*processors) as run:
        await run.worker.queue_frame(SILENCE)
        yield run.errors


async def test_emostt_owns_the_turn_and_its_eager_ends_reach_pipecats_turn_strategies() -> None:
    async with turn_server() as server:
        stt = EmosttSTTService(
            url=server.url, device_id="pc-turns", turn_detection=SEMANTIC, enable_eager_end_of_turn=True
        )
        eager_events: list[dict[str, Any]] = []

        @stt.event_handler("on_eager_end_of_turn")
        async def on_eager(_stt: EmosttSTTService, event: dict[str, Any]) -> None:
            eager_events.append(event)

        before, after = Collector(), Collector()
        user = LLMUserAggregator(LLMContext())
        async with turn_pipeline(stt, before, user, after) as errors:
            await after.wait_for(UserStoppedSpeakingFrame)
            await after.wait_for(LLMContextFrame)
    assert server.configs[0]["turn_detection"] == SEMANTIC
    assert [type(f) for f in before.of_any(*TURN_FRAMES)] == [
        ProposedUserStartedSpeakingFrame,
        EagerTranscriptionFrame,
        EagerEndOfTurnCancelFrame,  # turn_resumed withdrew the first one
        EagerTranscriptionFrame,
        TranscriptionFrame,  # the final confirms the second one
        ProposedUserStoppedSpeakingFrame,
    ]
    eager = before.of(EagerTranscriptionFrame)
    assert [(f.text, f.user_id, f.result["confidence"]) for f in eager] == [
        (EAGER_TEXT, "pc-turns", EAGER_CONFIDENCES[0]),
        (FINAL_TEXT, "pc-turns", EAGER_CONFIDENCES[1]),
    ]
    assert [e["confidence"] for e in eager_events] == list(EAGER_CONFIDENCES)
    [final] = before.of(TranscriptionFrame)
    assert final.text == FINAL_TEXT and final.finalized
    assert final.result["end_of_turn_confidence"] == END_OF_TURN_CONFIDENCE
    assert final.result["end_reason"] == "turn_model"
    assert len(before.of(InterimTranscriptionFrame)) == 2
    [metadata] = [f for f in before.of(STTMetadataFrame) if f.service_name == stt.name]
    assert isinstance(metadata.user_turn_strategies, EagerUserTurnStrategies)
    # Pipecat's user aggregator resolved emostt's proposals into the turn's start and stop.
    turn = [type(f) for f in after.of_any(UserStartedSpeakingFrame, UserStoppedSpeakingFrame)]
    assert turn == [UserStartedSpeakingFrame, UserStoppedSpeakingFrame]
    assert errors == []


async def test_without_eager_frames_the_final_still_ends_the_turn() -> None:
    async with turn_server() as server:
        stt = EmosttSTTService(url=server.url, device_id="pc-turns-2", turn_detection=SEMANTIC)
        before, after = Collector(), Collector()
        async with turn_pipeline(stt, before, LLMUserAggregator(LLMContext()), after) as errors:
            await after.wait_for(UserStoppedSpeakingFrame)
    assert [type(f) for f in before.of_any(*TURN_FRAMES)] == [
        ProposedUserStartedSpeakingFrame,
        TranscriptionFrame,
        ProposedUserStoppedSpeakingFrame,
    ]
    [metadata] = [f for f in before.of(STTMetadataFrame) if f.service_name == stt.name]
    assert isinstance(metadata.user_turn_strategies, ExternalUserTurnStrategies)
    assert not isinstance(metadata.user_turn_strategies, EagerUserTurnStrategies)
    assert errors == []


def test_semantic_turns_are_emosts_turns() -> None:
    with pytest.raises(ValueError, match="vad_force_turn_endpoint=False"):
        EmosttSTTService(url="ws://h", device_id="d", turn_detection=SEMANTIC, vad_force_turn_endpoint=True)
    with pytest.raises(ValueError, match="semantic"):
        EmosttSTTService(url="ws://h", device_id="d", enable_eager_end_of_turn=True)
    with pytest.raises(ValueError, match="eagerness"):
        EmosttSTTService(url="ws://h", device_id="d", turn_detection={"type": "semantic", "eagerness": "x"})
