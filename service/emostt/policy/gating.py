"""Confidence gating: mark a final the dialogue engine should not act on blindly, and say why.

Pure. Nothing is dropped here; the session drops gated finals only when the client asked.
"""

from __future__ import annotations

from emostt.inference.engine import TranscriptionResult
from emostt.vocabulary.labels import NON_SPEECH_EVENTS
from emostt.vocabulary.session_config import GatingConfig


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
