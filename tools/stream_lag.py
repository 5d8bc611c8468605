"""Event lag: how much later than a zero-cost server an event reaches the streaming device.

A device sends its audio in chunks; an event depends on audio up to some sample. A server
that cost nothing would send the event the moment the chunk holding that sample arrived,
so the event's **lag** is its arrival at the device minus the send time of that chunk (both
on the device's clock; on one machine the network adds microseconds). What the event
depends on:

- partial: its audio, up to ``audio_end_ms`` (the server requests it after the chunk that
  brought that audio);
- final ended by silence: the endpoint. The endpointer decides after
  ``silence_duration_ms`` of silence (rounded up to whole 32 ms frames) and keeps only the
  first ``TRAILING_PADDING_MS`` of it (also in whole frames) in the final's audio, so the
  decision needs audio up to ``audio_end_ms`` + (silence frames - kept frames) x 32 ms;
- final at the length limit: its own audio (the cut is made at ``audio_end_ms``);
- final by ``finalize`` or at the close: the last chunk sent.

With a real model, lag = front end + model time. With the instant engine
(tools/bench_server.py) the model time is ~0, so lag measures the front end alone: WebSocket
receive and decoding, resampling, VAD, segmentation, batching and dispatch, event sending,
and waiting for the event loop. This is the same frame arithmetic as
``emostt.streaming.segmenter`` (tests/unit/test_stream_lag.py checks it against the
segmenter itself).
"""

from __future__ import annotations

from collections.abc import Sequence

from emostt.streaming.segmenter import TRAILING_PADDING_MS
from emostt.vocabulary import VAD_FRAME_MS, VAD_FRAME_SAMPLES
from emostt.vocabulary.session_config import EndpointConfig


def endpoint_delay_frames(config: EndpointConfig) -> int:
    """Frames of silence analysed after a silence-ended final's last frame before the endpoint."""
    silence = max(config.frames(config.silence_duration_ms), 1)
    kept = min(silence, config.frames(min(config.prefix_padding_ms, TRAILING_PADDING_MS)))
    return silence - kept


def decided_at_sample(
    kind: str, audio_end_ms: int, end_reason: str | None, delay_frames: int, total_samples: int
) -> int:
    """The number of samples the server needed before it could send this event."""
    end_frame = audio_end_ms // VAD_FRAME_MS  # events carry frame boundaries: end_frame x 32 ms
    if kind == "final" and end_reason == "silence":
        end_frame += delay_frames
    elif kind == "final" and end_reason != "max_length":
        return total_samples  # finalize / close: after the last audio
    return min(end_frame * VAD_FRAME_SAMPLES, total_samples)


def available_at(sent_at: Sequence[float], samples: int, chunk_samples: int) -> float:
    """When the chunk holding sample ``samples - 1`` was sent (the last chunk if beyond)."""
    k = max(samples - 1, 0) // chunk_samples
    return sent_at[min(k, len(sent_at) - 1)]


def event_lag(
    kind: str,
    audio_end_ms: int,
    end_reason: str | None,
    arrival: float,
    sent_at: Sequence[float],
    *,
    delay_frames: int,
    chunk_samples: int,
    total_samples: int,
) -> float | None:
    """Seconds between the event's arrival and when a zero-cost server could have sent it;
    None when no audio was sent."""
    if not sent_at:
        return None
    needed = decided_at_sample(kind, audio_end_ms, end_reason, delay_frames, total_samples)
    return arrival - available_at(sent_at, needed, chunk_samples)
