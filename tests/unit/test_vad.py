"""Batched Silero VAD: the same probabilities as silero-vad's own streaming wrapper, whatever the batching."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from emostt.streaming.segmenter import FRAME_SAMPLES
from emostt.streaming.vad import VadBatcher, VadStream

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def vad() -> VadBatcher:
    batcher = VadBatcher(max_batch=4)
    batcher.start()
    yield batcher  # type: ignore[misc]
    batcher.stop()


def frames_of(audio: np.ndarray) -> np.ndarray:
    n = len(audio) // FRAME_SAMPLES
    return audio[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES).astype(np.float32)


def reference_probs(audio: np.ndarray) -> list[float]:
    from silero_vad import load_silero_vad

    model = load_silero_vad(onnx=True)
    return [float(model(torch.from_numpy(f), 16_000).item()) for f in frames_of(audio)]


def test_matches_silero_and_is_independent_of_batching(
    vad: VadBatcher, speech_with_pauses: np.ndarray
) -> None:
    rng = np.random.default_rng(0)
    audios = [speech_with_pauses, speech_with_pauses[::-1].copy(), (rng.standard_normal(48_000) * 0.05)]
    streams = [VadStream() for _ in audios]

    async def interleaved() -> list[list[float]]:
        # Each stream sends chunks of varying frame counts; all streams run concurrently (shared batches).
        async def one(stream: VadStream, audio: np.ndarray, chunk: int) -> list[float]:
            frames = frames_of(audio)
            out: list[float] = []
            for i in range(0, len(frames), chunk):
                out += await vad.speech_probs(stream, frames[i : i + chunk])
            return out

        return await asyncio.gather(
            *(one(s, a, c) for s, a, c in zip(streams, audios, (1, 3, 7), strict=True))
        )

    batched = asyncio.run(interleaved())
    for audio, probs in zip(audios, batched, strict=True):
        np.testing.assert_allclose(probs, reference_probs(audio), atol=TOLERANCE)


def test_speech_scores_high_and_silence_low(vad: VadBatcher, speech_with_pauses: np.ndarray) -> None:
    probs = np.array(asyncio.run(vad.speech_probs(VadStream(), frames_of(speech_with_pauses))))
    lead_in = probs[: 8000 // FRAME_SAMPLES - 1]
    assert lead_in.max() < 0.2
    assert (probs > 0.5).mean() > 0.2
