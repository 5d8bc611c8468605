"""``EmosttSTTService`` in real Pipecat pipelines (pipecat-ai's PipelineWorker and WorkerRunner, its
Silero VAD, its audio frames) against a real emostt server with the bundled demo model, which reads
docs/samples/turn_left.wav as "turn left". Also Pipecat's own ``OpenAIRealtimeSTTService`` pointed
at the server's ``/v1/realtime``."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    EagerTranscriptionFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    ProposedUserStartedSpeakingFrame,
    ProposedUserStoppedSpeakingFrame,
    STTMetadataFrame,
    STTUpdateSettingsFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.pipeline.worker import ProcessorUnusablePolicy
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregator
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.services.openai.stt import OpenAIRealtimeSTTService
from pipecat.transcriptions.language import Language
from pipecat.turns.user_turn_strategies import ExternalUserTurnStrategies
from pipecat.utils.errors import ErrorCategory
from pipecat_emostt import EmosttSTTService, EmotionChangedFrame
from prometheus_client import REGISTRY

from emostt.audio import read_audio_file
from emostt.inference.engine import Engine
from tests.conftest import espeak
from tests.integration.server import (
    Server,
    free_port,
    running_server,
    server_on_port,
    service_settings,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import demo_data
from tests.pipecat.harness import RATE, Collector, audio_frames, pipeline, result_of

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "turn_left.wav"
# Fast reconnection for the tests (the defaults wait 4 to 10 s between 5 attempts).
FAST_RETRY: dict[str, Any] = {
    "reconnect_attempts": 200,
    "reconnect_backoff_min_wait": 0.05,
    "reconnect_backoff_max_wait": 0.1,
}
F = TypeVar("F", bound=Frame)
# An emostt-mode turn: proposed start, the final's transcription, proposed stop.
TURN_FRAMES = (ProposedUserStartedSpeakingFrame, TranscriptionFrame, ProposedUserStoppedSpeakingFrame)
EAGER_TURN_FRAMES = (*TURN_FRAMES, EagerTranscriptionFrame, EagerEndOfTurnCancelFrame)
# What Pipecat's user aggregator makes of them.
USER_TURN_FRAMES = (UserStartedSpeakingFrame, UserStoppedSpeakingFrame)


# -- audio --------------------------------------------------------------------------------------


def room_noise(seconds: float, seed: int = 0) -> np.ndarray:
    """A microphone's noise floor (-65 dBFS), as in the demo model's training data."""
    samples = int(seconds * RATE)
    return (np.random.default_rng(seed).standard_normal(samples) * 10 ** (-65 / 20)).astype(np.float32)


@pytest.fixture(scope="module")
def turn_left() -> np.ndarray:
    return read_audio_file(SAMPLE)


def speech(turn_left: np.ndarray, after_s: float = 1.0, seed: int = 0) -> list[InputAudioRawFrame]:
    """ "turn left" between stretches of room noise: enough after it for any VAD to end the speech."""
    return audio_frames(room_noise(0.5, seed), turn_left, room_noise(after_s, seed + 1))


# -- servers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(demo_engine: Engine) -> Iterator[Server]:
    with running_server(service_settings(session_defaults={}), demo_engine) as srv:
        yield srv


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- pipelines ----------------------------------------------------------------------------------


def emostt_stt(url: str, device_id: str, **kwargs: Any) -> EmosttSTTService:
    return EmosttSTTService(url=url, device_id=device_id, **kwargs)


def check_final(frame: TranscriptionFrame, device_id: str) -> dict[str, Any]:
    assert frame.text == "turn left"
    assert frame.user_id == device_id and frame.timestamp
    assert frame.language is Language.EN
    final = result_of(frame)
    assert final["type"] == "final" and final["text"] == "turn left"
    assert final["emotion"]["label"] in final["emotion"]["scores"]
    assert sum(final["emotion"]["scores"].values()) == pytest.approx(1, abs=1e-6)
    assert sum(final["language"]["scores"].values()) == pytest.approx(1, abs=1e-6)
    assert final["mood"]["label"] in final["mood"]["scores"]
    assert sum(final["mood"]["scores"].values()) == pytest.approx(1, abs=1e-6)
    assert final["gated"] is False and 0 < final["confidence"] <= 1
    return final


# -- tests --------------------------------------------------------------------------------------


async def test_pipecat_vad_finalizes_and_the_final_carries_emotion_and_mood(
    server: Server, turn_left: np.ndarray
) -> None:
    """Pipecat mode: Silero (Pipecat's VAD) ends the turn, the service sends finalize."""
    stt = emostt_stt(f"ws://{server.base}", "robot-pc-1")
    async with pipeline(VADProcessor(vad_analyzer=SileroVADAnalyzer()), stt) as run:
        await run.push(speech(turn_left))
        [frame] = await run.collector.wait_for(TranscriptionFrame)
        final = check_final(frame, "robot-pc-1")
        assert final["end_reason"] == "finalize" and frame.finalized
        assert all(f.user_id == "robot-pc-1" for f in run.collector.of(InterimTranscriptionFrame))
        assert not run.collector.of(ProposedUserStartedSpeakingFrame)  # Pipecat's VAD owns the turn
        assert stt.session is not None and stt.session["device_id"] == "robot-pc-1"
    assert run.errors == []


async def test_emostt_turns_propose_user_speaking(server: Server, turn_left: np.ndarray) -> None:
    """emostt mode: speech_started and the final propose the user's turn; no local VAD."""
    stt = emostt_stt(f"ws://{server.base}", "robot-pc-2", vad_force_turn_endpoint=False)
    async with pipeline(stt) as run:
        await run.push(speech(turn_left))
        await run.collector.wait_for(ProposedUserStoppedSpeakingFrame)
    assert [type(f) for f in run.collector.frames if isinstance(f, TURN_FRAMES)] == list(TURN_FRAMES)
    [frame] = run.collector.of(TranscriptionFrame)
    assert check_final(frame, "robot-pc-2")["end_reason"] == "silence" and frame.finalized
    [metadata] = [f for f in run.collector.of(STTMetadataFrame) if f.service_name == stt.name]
    assert isinstance(metadata.user_turn_strategies, ExternalUserTurnStrategies)
    assert run.errors == []


async def test_semantic_turns_eager_end_of_turn_and_the_turn_end_with_the_real_turn_model(
    server: Server, tmp_path: Path
) -> None:
    """The real turn model (Smart Turn), eagerness low, a pause inside the turn (as in
    tests/integration/test_semantic_turns.py): an eager end of turn at the pause, withdrawn when
    speech resumes, then one final and Pipecat's user aggregator ends the user's turn on it."""
    fragment, rest = (
        read_audio_file(espeak(text, tmp_path / f"{i}.wav", voice="en-us")) * 0.8
        for i, text in enumerate(("and then", "turn left at the door."))
    )
    turn = audio_frames(room_noise(0.5), fragment, room_noise(1.2, 1), rest, room_noise(4.0, 2))
    turns = {"type": "semantic", "eagerness": "low"}
    url = f"ws://{server.base}"
    stt = emostt_stt(url, "robot-pc-turns", turn_detection=turns, enable_eager_end_of_turn=True)
    before = Collector()
    async with pipeline(stt, before, LLMUserAggregator(LLMContext())) as run:
        for start in range(0, len(turn), 5):  # 100 ms at a time, in real time: pauses are the cue
            await run.push(turn[start : start + 5])
            await asyncio.sleep(0.1)
            if run.collector.of(UserStoppedSpeakingFrame):
                break
        await run.collector.wait_for(UserStoppedSpeakingFrame)
    kinds = [type(f) for f in before.frames if isinstance(f, EAGER_TURN_FRAMES)]
    assert kinds[0] is ProposedUserStartedSpeakingFrame and kinds[-2:] == list(TURN_FRAMES[1:]), kinds
    assert kinds.count(TranscriptionFrame) == 1 and EagerTranscriptionFrame in kinds, kinds
    [eager, *_] = before.of(EagerTranscriptionFrame)
    assert eager.text and 0.5 <= eager.result["confidence"] < 0.7
    [frame] = before.of(TranscriptionFrame)
    assert frame.finalized and result_of(frame)["end_reason"] == "turn_model"
    assert result_of(frame)["end_of_turn_confidence"] >= 0.7
    user_turn = [type(f) for f in run.collector.frames if isinstance(f, USER_TURN_FRAMES)]
    assert user_turn == list(USER_TURN_FRAMES)
    assert run.errors == []


async def test_mood_change_is_an_emotion_changed_frame_after_its_final(server: Server) -> None:
    """Session config from Settings (mood.min_updates 1): two sad clips change the mood once."""
    sad = [
        demo_data.make_clip(demo_data.ClipSpec("speech", text, "en", "sad", "speech", "en+m5", 168)).audio
        for text in ("i need help", "thank you")
    ]
    settings = EmosttSTTService.Settings(interim_results=False, mood={"min_updates": 1})
    stt = emostt_stt(f"ws://{server.base}", "robot-pc-3", settings=settings, vad_force_turn_endpoint=False)
    async with pipeline(stt) as run:
        assert stt.session_config["mood"]["min_updates"] == 1
        await run.push(audio_frames(room_noise(0.5), sad[0], room_noise(1.0, 1), sad[1], room_noise(1.0, 2)))
        await run.collector.wait_for(TranscriptionFrame, 2)
        # The EndFrame closes the session: every event the server still sends comes first.
    assert not run.collector.of(InterimTranscriptionFrame)
    # Each proposed turn ends after its last final. (Streamed faster than real time, the second
    # utterance can start before the first one's final is out: then both are one turn.)
    turn = [type(f) for f in run.collector.frames if isinstance(f, TURN_FRAMES)]
    assert turn[0] is ProposedUserStartedSpeakingFrame and turn[-2:] == list(TURN_FRAMES[1:])
    assert turn.count(ProposedUserStartedSpeakingFrame) == turn.count(ProposedUserStoppedSpeakingFrame)
    [changed] = run.collector.of(EmotionChangedFrame)
    assert (changed.from_label, changed.to_label, changed.user_id) == ("neutral", "sad", "robot-pc-3")
    [final] = [
        f
        for f in run.collector.of(TranscriptionFrame)
        if result_of(f)["utterance_id"] == changed.utterance_id
    ]
    # Right after the TranscriptionFrame of the final that changed it (and that final's turn stop).
    position = run.collector.frames.index(changed)
    assert final in run.collector.frames[position - 2 : position]
    assert result_of(final)["mood"] == {"label": "sad", "scores": changed.scores}
    assert run.errors == []


async def test_end_frame_gets_the_open_utterances_final_and_settings_apply_live(
    server: Server, turn_left: np.ndarray
) -> None:
    stt = emostt_stt(f"ws://{server.base}", "robot-pc-6")
    async with pipeline(stt) as run:
        assert stt.session_config["language"] == "auto"
        await run.worker.queue_frame(
            STTUpdateSettingsFrame(delta=EmosttSTTService.Settings(language=Language.EN_US, use_itn=False))
        )
        deadline = time.monotonic() + 30
        while stt.session_config["language"] != "en":  # the server's config event answered it
            assert time.monotonic() < deadline, stt.session_config
            await asyncio.sleep(0.02)
        assert stt.session_config["use_itn"] is False
        await run.push(audio_frames(room_noise(0.5), turn_left))  # no silence after: still open
        # The pipeline's EndFrame: {"type": "close"}, the final, then the EndFrame goes on.
    [frame] = run.collector.of(TranscriptionFrame)
    check_final(frame, "robot-pc-6")
    assert run.collector.frames.index(frame) < run.collector.frames.index(run.collector.of(EndFrame)[0])
    assert run.errors == []


async def test_rejected_config_is_permanent_until_new_settings_fix_it(
    server: Server, turn_left: np.ndarray
) -> None:
    connected = asyncio.Event()
    bad = EmosttSTTService.Settings(partial_interval_ms=5)  # the protocol takes 100 to 10000
    stt = emostt_stt(f"ws://{server.base}", "robot-pc-9", settings=bad, **FAST_RETRY)

    @stt.event_handler("on_connected")
    async def on_connected(_service: EmosttSTTService) -> None:
        connected.set()

    async with pipeline(stt) as run:  # the default policy (CONTINUE): the application decides
        error = await run.first_error()
        assert error.category is ErrorCategory.INVALID_REQUEST and "partial_interval_ms" in error.error
        assert not stt.is_usable and not connected.is_set()
        good = EmosttSTTService.Settings(partial_interval_ms=300)
        await run.worker.queue_frame(STTUpdateSettingsFrame(delta=good))
        await asyncio.wait_for(connected.wait(), 30)
        assert stt.is_usable and stt.session_config["partial_interval_ms"] == 300
        await run.push(speech(turn_left))
        [frame] = await run.collector.wait_for(TranscriptionFrame)
        check_final(frame, "robot-pc-9")
    assert len(run.errors) == 1


async def test_rate_limit_1008_mid_session_is_permanent_and_not_retried(demo_engine: Engine) -> None:
    settings = service_settings(session_defaults={}, max_realtime_factor=1.0, burst_audio_s=0.5)
    with running_server(settings, demo_engine) as srv:
        sessions: list[str] = []
        stt = emostt_stt(f"ws://{srv.base}", "robot-pc-7", **FAST_RETRY)

        @stt.event_handler("on_connected")
        async def on_connected(service: EmosttSTTService) -> None:
            sessions.append(service.session["session_id"] if service.session else "")

        async with pipeline(stt, processor_unusable_policy=ProcessorUnusablePolicy.END) as run:
            await run.push(audio_frames(room_noise(2.0)))  # 2 s at once: over the 0.5 s burst
            await run.finished()
        [error] = run.errors
        assert error.processor is stt and not stt.is_usable
        assert error.category is ErrorCategory.RATE_LIMIT and "1008" in error.error
        assert "rate_limited" in error.error
        assert len(sessions) == 1  # never reconnected


async def test_drained_server_1012_mid_utterance_is_survived_and_its_restart_transcribes(
    demo_engine: Engine, turn_left: np.ndarray
) -> None:
    port = free_port()
    settings = service_settings(session_defaults={}, drain_timeout_s=5.0)
    sessions: list[str] = []
    reconnected = asyncio.Event()
    stt = emostt_stt(
        f"ws://127.0.0.1:{port}",
        "robot-pc-4",
        settings=EmosttSTTService.Settings(partial_interval_ms=200),
        **FAST_RETRY,
    )

    @stt.event_handler("on_connected")
    async def on_connected(service: EmosttSTTService) -> None:
        assert service.session is not None
        sessions.append(service.session["session_id"])
        if len(sessions) == 2:
            reconnected.set()

    first = server_on_port(port, settings, demo_engine)
    old = await asyncio.to_thread(first.__enter__)
    async with pipeline(stt) as run:
        # Speech and no silence after it: the utterance is still open when the drain begins.
        await run.push(audio_frames(room_noise(0.5), turn_left))
        await run.collector.wait_for(InterimTranscriptionFrame)
        old.should_exit = True  # SIGTERM: the drain finalizes the open utterance, closes 1012, stops
        await asyncio.to_thread(first.__exit__, None, None, None)  # the service retries meanwhile
        [drained] = await run.collector.wait_for(TranscriptionFrame)
        assert check_final(drained, "robot-pc-4")["end_reason"] == "finalize"  # by the drain, before 1012
        second = server_on_port(port, settings, demo_engine)
        await asyncio.to_thread(second.__enter__)
        try:
            await asyncio.wait_for(reconnected.wait(), 30)
            await run.push(speech(turn_left, seed=5))
            frames = await run.collector.wait_for(TranscriptionFrame, 2)
            check_final(frames[1], "robot-pc-4")
            assert stt.is_usable
        finally:
            await run.worker.queue_frame(EndFrame())
            await run.finished()
            await asyncio.to_thread(second.__exit__, None, None, None)
    assert len(sessions) == 2 and sessions[0] != sessions[1]
    # Attempts that found the draining server, or none, are reported; none of them as permanent.
    assert all(e.processor is stt for e in run.errors)
    assert not [e for e in run.errors if e.category is None or e.category.is_permanent]


async def test_wrong_token_is_a_permanent_error_after_one_attempt(demo_engine: Engine) -> None:
    settings = service_settings(session_defaults={}, auth_tokens={"right-token": "*"})
    with running_server(settings, demo_engine) as srv:
        before = metric("emostt_rejected_connections_total", reason="unauthorized")
        stt = emostt_stt(f"ws://{srv.base}", "robot-pc-5", token="wrong-token", **FAST_RETRY)
        # The policy that used to be ErrorFrame(fatal=True): the pipeline ends itself.
        async with pipeline(stt, processor_unusable_policy=ProcessorUnusablePolicy.END) as run:
            await run.finished()
        [error] = run.errors
        assert error.processor is stt and not stt.is_usable
        assert error.category is ErrorCategory.AUTHENTICATION and "unauthorized" in error.error
        assert metric("emostt_rejected_connections_total", reason="unauthorized") - before == 1

        right = emostt_stt(f"ws://{srv.base}", "robot-pc-5", token="right-token")
        async with pipeline(right) as run:
            assert right.session is not None and right.is_usable
        assert run.errors == []


async def test_pipecat_openai_realtime_stt_service_on_v1_realtime(
    server: Server, turn_left: np.ndarray
) -> None:
    """Pipecat's own OpenAIRealtimeSTTService, pointed at emostt: by default (``turn_detection``
    off) Silero's stop commits each turn."""
    stt = OpenAIRealtimeSTTService(api_key="unused", base_url=f"ws://{server.base}/v1/realtime")
    async with pipeline(VADProcessor(vad_analyzer=SileroVADAnalyzer()), stt) as run:
        await run.push(speech(turn_left))
        [frame] = await run.collector.wait_for(TranscriptionFrame)
    completed = result_of(frame)
    assert frame.text == "turn left"
    assert completed["type"] == "conversation.item.input_audio_transcription.completed"
    assert sum(completed["emotion"]["scores"].values()) == pytest.approx(1, abs=1e-6)
    assert completed["mood"]["label"] in completed["mood"]["scores"]
    assert completed["end_reason"] == "finalize"  # the commit on Silero's stop ended the turn
    assert run.errors == []


async def test_pipecat_openai_realtime_stt_service_with_server_vad(
    server: Server, turn_left: np.ndarray
) -> None:
    """``turn_detection={"type": "server_vad"}``: emostt's VAD ends the turn, Pipecat proposes it."""
    stt = OpenAIRealtimeSTTService(
        api_key="unused",
        base_url=f"ws://{server.base}/v1/realtime",
        turn_detection={"type": "server_vad", "silence_duration_ms": 500},
    )
    async with pipeline(stt) as run:
        await run.push(speech(turn_left))
        await run.collector.wait_for(ProposedUserStoppedSpeakingFrame)
        [frame] = await run.collector.wait_for(TranscriptionFrame)
    assert frame.text == "turn left" and result_of(frame)["end_reason"] == "silence"
    assert sum(result_of(frame)["emotion"]["scores"].values()) == pytest.approx(1, abs=1e-6)
    assert run.collector.of(ProposedUserStartedSpeakingFrame)
    assert run.errors == []


async def test_example_pipeline_runs_and_fills_the_llm_context(server: Server) -> None:
    """clients/pipecat/examples/emotion_pipeline.py: imports without a server, then runs on one."""
    path = Path(__file__).resolve().parents[2] / "clients" / "pipecat" / "examples" / "emotion_pipeline.py"
    spec = importlib.util.spec_from_file_location("emotion_pipeline", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    context = await example.stream_file(
        f"ws://{server.base}", "robot-pc-8", None, str(SAMPLE), handle_sigint=False
    )
    assert {"role": "user", "content": "turn left"} in context.get_messages()
