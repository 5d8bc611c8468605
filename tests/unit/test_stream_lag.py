"""tools/stream_lag.py: when a zero-cost server could send each event, checked against the
segmenter itself (the endpoint frame) and the chunking (the chunk that brought a sample)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from emostt.streaming.segmenter import Segmenter, SpeechEnded
from emostt.vocabulary import VAD_FRAME_MS, VAD_FRAME_SAMPLES
from emostt.vocabulary.session_config import EndpointConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import stream_lag


@pytest.mark.parametrize("silence_ms", [0, 32, 100, 200, 500, 800, 1000])
@pytest.mark.parametrize("prefix_padding_ms", [0, 50, 300])
def test_silence_endpoint_is_where_the_segmenter_decides(silence_ms: int, prefix_padding_ms: int) -> None:
    config = EndpointConfig(silence_duration_ms=silence_ms, prefix_padding_ms=prefix_padding_ms)
    segmenter = Segmenter(config)
    probs = [0.0] * 10 + [0.9] * 30 + [0.0] * 100
    decided = ended = None
    for prob in probs:
        events = [e for e in segmenter.push(prob) if isinstance(e, SpeechEnded)]
        if events:
            decided, ended = segmenter.frame, events[0]  # frames analysed when the endpoint fired
            break
    assert ended is not None and decided is not None
    audio_end_ms = ended.end_frame * VAD_FRAME_MS  # what the final event carries
    delay = stream_lag.endpoint_delay_frames(config)
    needed = stream_lag.decided_at_sample("final", audio_end_ms, "silence", delay, total_samples=10**9)
    assert needed == decided * VAD_FRAME_SAMPLES


def test_partials_length_cuts_and_finalize() -> None:
    assert stream_lag.decided_at_sample("partial", 640, None, 12, 10**9) == 20 * VAD_FRAME_SAMPLES
    assert stream_lag.decided_at_sample("final", 640, "max_length", 12, 10**9) == 20 * VAD_FRAME_SAMPLES
    assert stream_lag.decided_at_sample("final", 640, "finalize", 12, 50_000) == 50_000
    assert stream_lag.decided_at_sample("final", 640, "silence", 12, 100) == 100  # clipped to the audio


def test_the_chunk_that_brought_a_sample() -> None:
    sent = [0.0, 0.1, 0.2, 0.3]
    assert stream_lag.available_at(sent, 1600, 1600) == 0.0  # samples 0..1599: chunk 0
    assert stream_lag.available_at(sent, 1601, 1600) == 0.1
    assert stream_lag.available_at(sent, 10**6, 1600) == 0.3  # beyond: the last chunk
    lag = stream_lag.event_lag(
        "partial", 64, None, 0.25, sent, delay_frames=12, chunk_samples=1600, total_samples=6400
    )
    assert lag == pytest.approx(0.25)  # 2 frames = 1024 samples, in chunk 0
    assert (
        stream_lag.event_lag(
            "partial", 64, None, 1.0, [], delay_frames=12, chunk_samples=1600, total_samples=0
        )
        is None
    )
