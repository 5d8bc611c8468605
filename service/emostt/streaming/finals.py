"""A served final's post-processing, pure: gate it, update the speaker's mood, build its events.

No I/O, no clock and no metrics: the session sends what ``final_events`` returns, in one go (a
final and the ``emotion_changed`` it causes leave together), and counts it.
"""

from __future__ import annotations

from dataclasses import dataclass

from emostt.policy.gating import gate_reasons
from emostt.policy.outcome import Served
from emostt.streaming import events
from emostt.streaming.mood import MoodTracker
from emostt.vocabulary.session_config import GatingConfig


@dataclass(frozen=True)
class FinalEvents:
    gate_reasons: list[str]
    # Gated, and the client asked not to receive gated finals: nothing is sent.
    dropped: bool
    # The final, then ``emotion_changed`` when the mood changed; empty when dropped.
    events: tuple[events.Event, ...]
    # The mood's new label when this final changed it.
    mood_changed_to: str | None


def final_events(
    utterance_id: str,
    served: Served,
    *,
    gating: GatingConfig,
    mood: MoodTracker | None,
    end_reason: str,
    audio_start_ms: int,
    audio_end_ms: int,
    latency_ms: float,
    end_of_turn_confidence: float | None = None,
) -> FinalEvents:
    """What to send for ``served``. ``mood`` is the session's tracker (None when the client
    turned the mood off); it is updated here, in utterance order, by the caller's contract."""
    result = served.result
    reasons = gate_reasons(result, gating)
    if reasons and gating.drop_gated:
        return FinalEvents(reasons, dropped=True, events=(), mood_changed_to=None)
    # Gated finals carry the mood unchanged (docs/protocol.md, "Mood").
    update = mood.observe(result, bool(reasons), audio_end_ms) if mood is not None else None
    final = events.final(
        utterance_id,
        result,
        gate_reasons=reasons,
        degraded=served.degraded,
        end_reason=end_reason,
        audio_start_ms=audio_start_ms,
        audio_end_ms=audio_end_ms,
        latency_ms=latency_ms,
        mood=update.mood if update else None,
        end_of_turn_confidence=end_of_turn_confidence,
    )
    if update is not None and update.changed is not None:
        change = events.emotion_changed(update.changed, utterance_id)
        return FinalEvents(reasons, False, (final, change), update.changed.to_label)
    return FinalEvents(reasons, False, (final,), None)
