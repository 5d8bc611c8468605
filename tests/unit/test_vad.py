"""Batched Silero VAD: the same probabilities as silero-vad's own streaming wrapper, whatever the batching."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from emostt.streaming.vad import VadBatcher, VadStream
from emostt.vocabulary import VAD_FRAME_SAMPLES

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def vad() -> VadBatcher:
    batcher = VadBatcher(max_batch=4)
    batcher.start()
    yield batcher  # type: ignore[misc]
    batcher.stop()


def frames_of(audio: np.ndarray) -> np.ndarray:
    n = len(audio) // VAD_FRAME_SAMPLES
    return audio[: n * VAD_FRAME_SAMPLES].reshape(n, VAD_FRAME_SAMPLES).astype(np.float32)


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
    lead_in = probs[: 8000 // VAD_FRAME_SAMPLES - 1]
    assert lead_in.max() < 0.2
    assert (probs > 0.5).mean() > 0.2


class BatchRecordingVad(VadBatcher):
    """Measurement harness: the real VAD, recording how many streams each batch held."""

    def __init__(self, max_batch: int, coalesce_s: float) -> None:
        super().__init__(max_batch=max_batch, coalesce_s=coalesce_s)
        self.batch_sizes: list[int] = []

    def run_batch(self, streams: list[VadStream], frames: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(streams))
        return super().run_batch(streams, frames)


def test_requests_arriving_within_the_window_run_as_one_batch(speech_16k: np.ndarray) -> None:
    # A window far longer than the test, and room for exactly two: the first request waits for
    # the second (not for the clock), then both run as one batch.
    vad = BatchRecordingVad(max_batch=2, coalesce_s=30.0)
    vad.start()
    frame = frames_of(speech_16k)[:1]

    async def both() -> list[list[float]]:
        first = asyncio.ensure_future(vad.speech_probs(VadStream(), frame))
        second = asyncio.ensure_future(vad.speech_probs(VadStream(), frame))
        return list(await asyncio.gather(first, second))

    try:
        probs = asyncio.run(both())
    finally:
        vad.stop()
    assert vad.batch_sizes == [2]
    assert probs[0] == pytest.approx(probs[1], abs=TOLERANCE)


def test_a_lone_request_runs_when_the_window_closes(speech_16k: np.ndarray) -> None:
    vad = BatchRecordingVad(max_batch=8, coalesce_s=0.01)
    vad.start()
    try:
        probs = asyncio.run(vad.speech_probs(VadStream(), frames_of(speech_16k)[:3]))
    finally:
        vad.stop()
    assert len(probs) == 3 and vad.batch_sizes == [1, 1, 1]
