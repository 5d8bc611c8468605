"""Frames that emostt adds to a Pipecat pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import DataFrame


@dataclass
class EmotionChangedFrame(DataFrame):
    """The speaker's mood changed: emostt's ``emotion_changed`` event (docs/protocol.md, "Mood").

    Pushed downstream by :class:`~pipecat_emostt.EmosttSTTService` right after the
    ``TranscriptionFrame`` of the final that caused the change. A data frame, so it stays
    in order with the transcriptions (and, like them, is dropped by an interruption that
    arrives before it is processed). Every final's ``result["mood"]`` carries the same
    smoothed mood; this frame is the edge, for processors that only react to changes.

    Parameters:
        from_label: The mood's previous label (``happy sad angry neutral fearful disgusted
            surprised``).
        to_label: The mood's new label.
        utterance_id: The final that changed it (``u1``, ``u2``, … of the session).
        scores: The mood's distribution at that final (sums to 1).
        user_id: The device id the service streams as.
        result: The whole ``emotion_changed`` event as the server sent it.
    """

    from_label: str
    to_label: str
    utterance_id: str
    scores: dict[str, float] = field(default_factory=dict)
    user_id: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"{self.name}(user: {self.user_id}, {self.from_label} -> {self.to_label}, "
            f"utterance: {self.utterance_id})"
        )
