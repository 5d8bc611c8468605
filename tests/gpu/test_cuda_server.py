"""The server on CUDA: devices stream held-out speech over real WebSockets to a real uvicorn
server whose engine runs on the GPU (the demo model, fp16 as served), and get their finals."""

from __future__ import annotations

import asyncio

import numpy as np

from emostt.config import Settings
from emostt.inference.engine import TranscriptionRequest
from tests.gpu.conftest import NEEDS_CUDA, Clip, EngineFactory
from tests.integration.server import pcm16, running_server, service_settings, stream

pytestmark = NEEDS_CUDA

SESSIONS = 4
CLIPS_PER_SESSION = 3
MIN_SAME_TEXT = 0.8  # streamed finals vs the same clips transcribed whole (edges differ a little)


def room_noise(samples: int, seed: int) -> np.ndarray:
    """The demo model's training noise floor (-65 dBFS) between phrases."""
    return (np.random.default_rng(seed).standard_normal(samples) * 10 ** (-65 / 20)).astype(np.float32)


def session_audio(group: list[Clip], seed: int) -> np.ndarray:
    parts = [room_noise(16_000, seed)]
    for k, clip in enumerate(group):
        parts += [clip.audio, room_noise(16_000, seed + k + 1)]
    return np.concatenate(parts)


def test_server_on_cuda_streams_finals(load_engine: EngineFactory, clips: list[Clip]) -> None:
    speech = [c for c in clips if c.event == "speech"][: SESSIONS * CLIPS_PER_SESSION]
    assert len(speech) == SESSIONS * CLIPS_PER_SESSION
    engine = load_engine("demo", "cuda", "fp16")
    groups = [speech[i::SESSIONS] for i in range(SESSIONS)]
    settings: Settings = service_settings(session_defaults={})

    async def everyone() -> list:
        return await asyncio.gather(
            *(
                stream(server.ws_url(f"gpu-{i}"), pcm16(session_audio(group, seed=10 * i)))
                for i, group in enumerate(groups)
            )
        )

    with running_server(settings, engine) as server:
        transcripts = asyncio.run(everyone())

    whole = {}
    for group in groups:
        results = engine.transcribe([TranscriptionRequest(c.audio) for c in group])
        for clip, result in zip(group, results, strict=True):
            whole[id(clip)] = result.text
    same = total = 0
    for transcript, group in zip(transcripts, groups, strict=True):
        assert transcript.close_code == 1000
        assert not transcript.of("error"), transcript.of("error")
        finals = transcript.of("final")
        assert len(finals) == len(group), [f["text"] for f in finals]
        for final, clip in zip(finals, group, strict=True):
            assert final["text"] and not final["degraded"]
            same += final["text"] == whole[id(clip)]
            total += 1
    assert same / total >= MIN_SAME_TEXT, (same, total)
