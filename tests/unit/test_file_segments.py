"""A whole file cut into speech segments offline, with the streaming path's endpointer and VAD."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from emostt.files.segments import CHUNK_FRAMES, FileSegmenter, Segment, frames_of, speech_segments
from emostt.streaming.vad import VadBatcher, VadStream
from emostt.vocabulary import VAD_FRAME_MS, VAD_FRAME_SAMPLES
from emostt.vocabulary.session_config import EndpointConfig

CONFIG = EndpointConfig(silence_duration_ms=320, max_utterance_ms=2_000)
MAX_FRAMES = CONFIG.frames(CONFIG.max_utterance_ms)


def segments_of(probs: list[float], total_samples: int, config: EndpointConfig = CONFIG) -> list[Segment]:
    segmenter = FileSegmenter(config, total_samples)
    return segmenter.push(probs) + segmenter.finish()


def test_pauses_end_segments_and_long_speech_is_cut_at_the_length_limit() -> None:
    speech, silence = [0.9] * 30, [0.05] * 40
    long_speech = [0.9] * (2 * MAX_FRAMES + 10)
    probs = silence + speech + silence + long_speech
    total = len(probs) * VAD_FRAME_SAMPLES - 100  # the last frame is partial
    segments = segments_of(probs, total)
    assert [s.index for s in segments] == list(range(len(segments)))
    assert [s.reason for s in segments] == ["silence", "max_length", "max_length", "finalize"]
    first, cuts = segments[0], segments[1:]
    assert first.start < 40 * VAD_FRAME_SAMPLES < 70 * VAD_FRAME_SAMPLES < first.end < 110 * VAD_FRAME_SAMPLES
    for before, after in itertools.pairwise(cuts):
        assert after.start == before.end, "speech that goes on across a cut loses nothing"
    assert all(s.end - s.start <= MAX_FRAMES * VAD_FRAME_SAMPLES for s in segments)
    assert segments[-1].end == total, "the end of the file ends the last segment, clipped to the file"


def test_silence_gives_no_segment() -> None:
    assert segments_of([0.01] * 500, 500 * VAD_FRAME_SAMPLES) == []


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, 0.2, 0.4, 0.6, 0.95]), max_size=400), st.integers(0, VAD_FRAME_SAMPLES - 1)
)
def test_segments_are_ordered_disjoint_and_inside_the_file(probs: list[float], short_by: int) -> None:
    total = max(len(probs) * VAD_FRAME_SAMPLES - short_by, 0)
    segments = segments_of(probs, total)
    assert [s.index for s in segments] == list(range(len(segments)))
    previous_end = 0
    for s in segments:
        assert previous_end <= s.start < s.end <= total
        assert s.end - s.start <= MAX_FRAMES * VAD_FRAME_SAMPLES
        previous_end = s.end


def test_frames_pad_the_last_frame_with_zeros() -> None:
    audio = np.ones(VAD_FRAME_SAMPLES + 10, dtype=np.float32)
    frames = frames_of(audio)
    assert frames.shape == (2, VAD_FRAME_SAMPLES)
    assert frames[1, :10].sum() == 10 and frames[1, 10:].sum() == 0


def test_the_vad_in_chunks_finds_the_phrases_as_one_pass_would(speech_with_pauses: np.ndarray) -> None:
    vad = VadBatcher()
    vad.start()
    config = EndpointConfig(silence_duration_ms=400)

    async def scenario() -> tuple[list[Segment], list[float]]:
        found = [s async for s in speech_segments(speech_with_pauses, vad, config)]
        whole = await vad.speech_probs(VadStream(), frames_of(speech_with_pauses))
        return found, whole

    try:
        found, whole = asyncio.run(scenario())
    finally:
        vad.stop()
    assert len(frames_of(speech_with_pauses)) > 3 * CHUNK_FRAMES, "the file spans several VAD requests"
    assert found == segments_of(whole, len(speech_with_pauses), config)
    assert len(found) == 3, "three phrases separated by a second of silence"
    assert found[0].start_s > 0.5 - config.prefix_padding_ms / 1000 - VAD_FRAME_MS / 1000, "after the lead-in"
