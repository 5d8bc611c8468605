"""The rich tokens SenseVoice writes in its first four output frames, and their API labels.

Pure data and lookups: no torch. Token ids are always resolved through the model's own
tokenizer (``RichVocab.from_tokenizer``), so any model dir (hub, fine-tuned, generated) works.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from emostt.vocabulary.labels import EMOTION_LABELS, EVENT_LABELS, LANGUAGE_HINTS, LANGUAGE_LABELS

# API label (emostt.vocabulary.labels) -> token piece. Labels are the stable public names in results.
LANGUAGE_TOKENS: dict[str, str] = dict(
    zip(LANGUAGE_LABELS, ("<|zh|>", "<|en|>", "<|yue|>", "<|ja|>", "<|ko|>", "<|nospeech|>"), strict=True)
)
EMOTION_TOKENS: dict[str, str] = dict(
    zip(
        EMOTION_LABELS,
        (
            "<|HAPPY|>",
            "<|SAD|>",
            "<|ANGRY|>",
            "<|NEUTRAL|>",
            "<|FEARFUL|>",
            "<|DISGUSTED|>",
            "<|SURPRISED|>",
            "<|EMO_UNKNOWN|>",
        ),
        strict=True,
    )
)
EVENT_TOKENS: dict[str, str] = dict(
    zip(
        EVENT_LABELS,
        (
            "<|Speech|>",
            "<|BGM|>",
            "<|Applause|>",
            "<|Laughter|>",
            "<|Cry|>",
            "<|Sneeze|>",
            "<|Breath|>",
            "<|Cough|>",
            "<|Sing|>",
            "<|Speech_Noise|>",
            "<|GBG|>",
            "<|Event_UNK|>",
        ),
        strict=True,
    )
)
TEXT_NORM_TOKENS: dict[str, str] = {"withitn": "<|withitn|>", "woitn": "<|woitn|>"}

# Indices into the model's query-embedding table (funasr SenseVoiceSmall.lid_dict / textnorm_dict).
LANGUAGE_QUERY_INDEX: dict[str, int] = dict(zip(LANGUAGE_HINTS, (0, 3, 4, 7, 11, 12, 13), strict=True))
EMOTION_QUERY_INDEX = 1
EVENT_QUERY_INDEX = 2
TEXT_NORM_QUERY_INDEX: dict[bool, int] = {True: 14, False: 15}
QUERY_FRAMES = 4
LANGUAGE_FRAME, EMOTION_FRAME, EVENT_FRAME, TEXT_NORM_FRAME = 0, 1, 2, 3


_RICH_TAG = re.compile(r"<\|[^|<>]*\|>")


def strip_rich_tags(text: str) -> str:
    """Remove every ``<|...|>`` tag and collapse the whitespace left behind."""
    return " ".join(_RICH_TAG.sub(" ", text).split())


def all_rich_pieces() -> list[str]:
    return [
        *LANGUAGE_TOKENS.values(),
        *EMOTION_TOKENS.values(),
        *EVENT_TOKENS.values(),
        *TEXT_NORM_TOKENS.values(),
    ]


@dataclass(frozen=True)
class RichVocab:
    """Token ids of each rich class in one model's vocabulary (label -> id)."""

    blank_id: int
    languages: Mapping[str, int]
    emotions: Mapping[str, int]
    events: Mapping[str, int]

    @classmethod
    def from_tokenizer(cls, piece_to_id: Callable[[str], int], unk_id: int, blank_id: int = 0) -> RichVocab:
        """Resolve ids through the tokenizer; a piece that maps to ``unk_id`` is absent from the vocab."""

        def resolve(table: Mapping[str, str]) -> dict[str, int]:
            ids = {label: piece_to_id(piece) for label, piece in table.items()}
            return {label: i for label, i in ids.items() if i != unk_id}

        languages, emotions, events = (
            resolve(LANGUAGE_TOKENS),
            resolve(EMOTION_TOKENS),
            resolve(EVENT_TOKENS),
        )
        missing = [name for name, ids in (("language", languages), ("emotion", emotions)) if len(ids) < 2]
        if missing or not events:
            raise ValueError(
                "tokenizer lacks SenseVoice rich tokens for: "
                + ", ".join(missing or ["event"])
                + " (is this a SenseVoice model dir?)"
            )
        return cls(blank_id=blank_id, languages=languages, emotions=emotions, events=events)

    def rich_ids(self) -> list[int]:
        return sorted({*self.languages.values(), *self.emotions.values(), *self.events.values()})
