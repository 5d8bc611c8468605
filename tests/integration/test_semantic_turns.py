"""Semantic turns against a real server with the real turn model (Smart Turn v3.2 from the
installed pipecat-ai) and real speech: a finished question ends its turn at the first pause, by
the model; a fragment's pause does not end the turn; without a turn model the session says so
and goes on with silence turns."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import soxr
from openai import AsyncOpenAI

from emostt.audio import read_audio_file
from emostt.inference.engine import Engine
from tests.conftest import espeak
from tests.integration.server import Server, Transcript, pcm16, running_server, service_settings, stream

RATE = 16_000
SEMANTIC = '{"type": "config", "turn_detection": {"type": "semantic", "eagerness": "auto"}}'


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * RATE)) * 10 ** (-65 / 20)).astype(np.float32)


@pytest.fixture(scope="module")
def said(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    folder = tmp_path_factory.mktemp("turns")
    texts = {"question": "what time is it?", "fragment": "and then", "rest": "turn left at the door."}
    return {k: read_audio_file(espeak(t, folder / f"{k}.wav", voice="en-us")) * 0.8 for k, t in texts.items()}


@pytest.fixture(scope="module")
def server(demo_engine: Engine) -> Iterator[Server]:
    with running_server(service_settings(session_defaults={}, turn_model="auto"), demo_engine) as srv:
        yield srv


async def session(server: Server, audio: np.ndarray, config: str = SEMANTIC) -> Transcript:
    chunks = pcm16(audio)
    messages: list[str | bytes] = [config, *(chunks[i : i + 3200] for i in range(0, len(chunks), 3200))]
    return await stream(server.ws_url("turns"), b"", messages=messages, pace_s=0.1)  # real time


async def test_a_finished_question_ends_its_turn_by_the_model(
    server: Server, said: dict[str, np.ndarray]
) -> None:
    transcript = await session(server, np.concatenate([noise(0.5), said["question"], noise(2.0, 1)]))
    ready = transcript.of("ready")[0]
    config = next(e for e in transcript.of("config"))["config"]
    assert (
        ready["config"]["turn_detection"]["type"] == "silence"
        and config["turn_detection"]["type"] == "semantic"
    )
    [final] = transcript.of("final")
    assert final["end_reason"] == "turn_model"
    assert final["end_of_turn_confidence"] >= 0.5  # eagerness auto: the threshold is 0.5
    # It ended at the first pause the model was asked about, long before the 4 s the silence would take.
    assert final["audio_end_ms"] <= 500 + len(said["question"]) * 1000 // RATE + 200


async def test_a_pause_after_a_fragment_does_not_end_the_turn(
    server: Server, said: dict[str, np.ndarray]
) -> None:
    turn = [noise(0.5), said["fragment"], noise(1.2, 1), said["rest"], noise(5.0, 2)]
    fragment_end_ms = (len(turn[0]) + len(turn[1])) * 1000 // RATE
    # Eagerness low (threshold 0.7, eager 0.5): the model is unsure at the fragment's pause.
    low = '{"type": "config", "turn_detection": {"type": "semantic", "eagerness": "low"}}'
    semantic = await session(server, np.concatenate(turn), low)
    [final] = semantic.of("final")
    assert final["audio_start_ms"] <= fragment_end_ms < final["audio_end_ms"], "one turn, both parts"
    assert final["end_of_turn_confidence"] >= 0.7
    # At the fragment's pause the model was fairly sure: an agent could start; then speech came back.
    [eager] = semantic.of("eager_end_of_turn")
    assert eager["utterance_id"] == final["utterance_id"] and 0.5 <= eager["confidence"] < 0.7
    assert [e["utterance_id"] for e in semantic.of("turn_resumed")] == [final["utterance_id"]]
    kinds = [e["type"] for e in semantic.events]
    assert kinds.index("eager_end_of_turn") < kinds.index("turn_resumed") < kinds.index("final")
    silence = await session(
        server, np.concatenate(turn), '{"type": "config", "vad": {"silence_duration_ms": 500}}'
    )
    assert len(silence.of("final")) == 2, "500 ms of silence cuts the turn at the fragment's pause"
    assert all(f["end_of_turn_confidence"] is None for f in silence.of("final"))


async def test_without_a_turn_model_semantic_turns_fall_back_to_silence(
    demo_engine: Engine, said: dict[str, np.ndarray]
) -> None:
    settings = service_settings(session_defaults={"turn_detection": {"type": "semantic"}}, turn_model="off")
    with running_server(settings, demo_engine) as srv:
        transcript = await session(
            srv, np.concatenate([noise(0.5), said["question"], noise(5.0, 1)]), '{"type": "keepalive"}'
        )
    events = transcript.events
    assert events[0]["type"] == "ready" and events[0]["config"]["turn_detection"]["type"] == "silence"
    assert events[1]["type"] == "error" and events[1]["code"] == "turn_model_unavailable"
    [final] = transcript.of("final")
    assert final["end_reason"] == "silence" and final["end_of_turn_confidence"] is None


async def openai_turns(server: Server, audio: np.ndarray, turn_detection: dict[str, object]) -> list[Any]:
    """The official ``openai`` client's Realtime session, audio appended in real time; the
    completed transcripts once the server has gone quiet."""
    client = AsyncOpenAI(base_url=f"http://{server.base}/v1", api_key="unused", max_retries=0)
    pcm = pcm16(soxr.resample(audio, RATE, 24_000).astype(np.float32))
    completed: list[Any] = []
    update = {"type": "transcription", "audio": {"input": {"turn_detection": turn_detection}}}
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        await connection.session.update(session=update)  # type: ignore[arg-type]

        async def read() -> None:
            async for event in connection:
                if event.type == "conversation.item.input_audio_transcription.completed":
                    completed.append(event)

        reader = asyncio.create_task(read())
        for i in range(0, len(pcm), 4800):
            await connection.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + 4800]).decode())
            await asyncio.sleep(0.1)  # a live microphone
        # The audio ended in 5 s of silence: every turn has ended (the longest wait is 8 s after
        # the last speech, so give the rest of it) and its transcript is out.
        await asyncio.sleep(4.0)
        reader.cancel()
    return completed


async def test_official_openai_client_semantic_vad_one_transcript_where_server_vad_gives_two(
    server: Server, said: dict[str, np.ndarray]
) -> None:
    turn = np.concatenate([noise(0.5), said["fragment"], noise(1.2, 1), said["rest"], noise(5.0, 2)])
    semantic, silence = await asyncio.gather(
        openai_turns(server, turn, {"type": "semantic_vad", "eagerness": "low"}),
        openai_turns(server, turn, {"type": "server_vad", "silence_duration_ms": 500}),
    )
    assert len(semantic) == 1 and len(silence) == 2
    assert semantic[0].model_extra["end_of_turn_confidence"] >= 0.7
    assert all(c.model_extra["end_of_turn_confidence"] is None for c in silence)
