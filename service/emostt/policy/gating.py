"""Confidence gating: mark a final the dialogue engine should not act on blindly, and say why.

Pure. Nothing is dropped here; the session drops gated finals only when the client asked.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from emostt.inference.engine import TranscriptionResult

# Speech over music is still speech (SenseVoice labels it BGM), so bgm is not here.
NON_SPEECH_EVENTS = frozenset(
    {"applause", "laughter", "cry", "sneeze", "breath", "cough", "gbg", "event_unk"}
)
# Every reason ``gate_reasons`` can give (a metric label: the set must stay fixed and small).
GATE_REASONS = (
    "empty_text",
    "low_confidence",
    "low_emotion_score",
    "low_language_score",
    "nospeech",
    *sorted(f"event_{event}" for event in NON_SPEECH_EVENTS),
)


class GatingConfig(BaseModel):
    """Gating settings: the session config's ``gating`` field."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_confidence: float = Field(0.0, ge=0.0, le=1.0)
    min_emotion_score: float = Field(0.0, ge=0.0, le=1.0)
    min_language_score: float = Field(0.0, ge=0.0, le=1.0)
    gate_nospeech: bool = True
    gate_non_speech_events: bool = True
    drop_gated: bool = False  # the client asked not to receive gated finals at all


def gate_reasons(result: TranscriptionResult, config: GatingConfig) -> list[str]:
    """Reasons to distrust ``result``, in a fixed order; empty means trusted."""
    reasons: list[str] = []
    if not result.text:
        reasons.append("empty_text")
    if result.confidence < config.min_confidence:
        reasons.append("low_confidence")
    if result.emotion.scores[result.emotion.label] < config.min_emotion_score:
        reasons.append("low_emotion_score")
    if result.language.scores[result.language.label] < config.min_language_score:
        reasons.append("low_language_score")
    if config.gate_nospeech and result.language.label == "nospeech":
        reasons.append("nospeech")
    if config.gate_non_speech_events and result.event.label in NON_SPEECH_EVENTS:
        reasons.append(f"event_{result.event.label}")
    return reasons
