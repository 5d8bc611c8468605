"""Sending a served final: its events (``finals.final_events``, pure) and the metrics and
counters that go with it. Event-loop only; called by the session in utterance order."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from emostt.observability import metrics
from emostt.policy.outcome import Served
from emostt.streaming.finals import final_events
from emostt.streaming.mood import MoodTracker
from emostt.streaming.utterance import SessionStats, Utterance
from emostt.vocabulary import VAD_FRAME_MS
from emostt.vocabulary.session_config import SessionConfig


async def send_final(
    emit: Callable[..., Awaitable[None]],
    stats: SessionStats,
    config: SessionConfig,
    mood: MoodTracker,
    utt: Utterance,
    served: Served,
    end_frame: int,
    reason: str,
    endpoint_at: float,
) -> None:
    """Gate ``served``, update the mood, send the final (and its emotion_changed), and count it."""
    now = time.perf_counter()
    latency_s = now - endpoint_at
    shaped = final_events(
        utt.utterance_id,
        served,
        gating=config.gating,
        mood=mood if config.mood.enabled else None,
        end_reason=reason,
        audio_start_ms=utt.start_frame * VAD_FRAME_MS,
        audio_end_ms=end_frame * VAD_FRAME_MS,
        latency_ms=latency_s * 1000,
        end_of_turn_confidence=utt.end_of_turn_confidence,
    )
    for gate_reason in shaped.gate_reasons:
        metrics.GATED.labels(gate_reason).inc()
    if shaped.dropped:
        metrics.UTTERANCES.labels("dropped_gated").inc()
        return
    if shaped.mood_changed_to is not None:
        metrics.EMOTION_CHANGES.labels(shaped.mood_changed_to).inc()
    await emit(*shaped.events)
    metrics.ENDPOINT_TO_FINAL_SECONDS.observe(latency_s)
    metrics.SPEECH_END_TO_FINAL_SECONDS.observe(now - (utt.speech_end_at or endpoint_at))
    if served.degraded:
        metrics.DEGRADED_FINALS.inc()
    metrics.UTTERANCES.labels("final").inc()
    stats.finals += 1
