"""Types the plugin exposes besides the STT itself: the speaker's emotion as stream context, and
the ``emotion_changed`` event."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emostt_client.protocol import SAMPLE_RATES, LanguageHint
from pydantic import BaseModel, Field

EmosttLanguages = LanguageHint
"""SenseVoice's language hints (the protocol core's); anything else is sent as ``auto`` (detect)."""

SUPPORTED_SAMPLE_RATES = SAMPLE_RATES
"""The rates emostt's ``?sample_rate=`` accepts (the server resamples to 16 kHz)."""


class EmotionContext(BaseModel):
    """The speaker's emotional state as the last final left it; set as ``RecognizeStream.context``
    (and so ``Agent.audio_recognition.stt_context``), and a ``livekit.agents.stt.SpeakerContext``.

    ``mood`` is the session's smoothed emotion (docs/protocol.md, "Mood"): act on it. ``emotion`` is
    the last utterance's own, noisier reading.
    """

    mood: str = "neutral"
    mood_scores: dict[str, float] = Field(default_factory=dict)
    emotion: str | None = None
    emotion_scores: dict[str, float] = Field(default_factory=dict)
    utterance_id: str | None = None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> EmotionContext | None:
        """From a final's ``SpeechData.metadata``; None when it holds no mood (``mood.enabled`` off)
        or the final is gated (no speech, a non-speech event: no evidence of the speaker's state)."""
        if not metadata or not isinstance(metadata.get("mood"), dict) or metadata.get("gated"):
            return None
        mood, emotion = metadata["mood"], metadata.get("emotion") or {}
        return cls(
            mood=str(mood.get("label", "neutral")),
            mood_scores=dict(mood.get("scores") or {}),
            emotion=emotion.get("label"),
            emotion_scores=dict(emotion.get("scores") or {}),
            utterance_id=metadata.get("utterance_id"),
        )

    def to_instructions(self) -> str:
        """One sentence for an LLM's context."""
        text = f"The user's tone of voice has recently sounded {self.mood}"
        if self.emotion and self.emotion not in ("unknown", self.mood):
            text += f" (their last sentence sounded {self.emotion})"
        return text + ". Take it into account in how you answer; do not mention that you can hear it."


@dataclass
class EmotionChangedEvent:
    """Emitted by ``STT`` as ``"emotion_changed"`` when the session's mood label changes."""

    from_label: str
    to_label: str
    utterance_id: str
    scores: dict[str, float] = field(default_factory=dict)
    request_id: str = ""
