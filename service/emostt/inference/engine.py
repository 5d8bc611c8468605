"""The engine contract: a batch of utterances in, one rich result per utterance out.

Engines are not thread-safe: exactly one thread (the batcher's model thread) calls
``transcribe`` on a given engine instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from emostt.vocabulary import SAMPLE_RATE
from emostt.vocabulary.labels import LANGUAGE_HINTS

AudioArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Distribution:
    """A probability distribution over one class of labels; ``label`` is its argmax."""

    label: str
    scores: dict[str, float]


@dataclass(frozen=True)
class Word:
    word: str
    start_ms: int
    end_ms: int
    confidence: float


@dataclass(frozen=True)
class TranscriptionRequest:
    """One utterance: float32 mono samples at 16 kHz in [-1, 1]."""

    audio: AudioArray
    language: str = "auto"
    use_itn: bool = True
    word_timestamps: bool = False
    # SenseVoice often answers EMO_UNKNOWN; callers that always want a concrete emotion set this.
    known_emotion_only: bool = False
    # Words or phrases to bias the text towards (context-graph beam search, ``keyterms.py``);
    # empty: plain greedy decoding, at no cost.
    keyterms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.keyterms, tuple):
            object.__setattr__(self, "keyterms", tuple(self.keyterms))
        if not all(isinstance(term, str) for term in self.keyterms):
            raise ValueError("keyterms must be strings")
        if self.language not in LANGUAGE_HINTS:
            raise ValueError(f"language must be one of {', '.join(LANGUAGE_HINTS)}, got {self.language!r}")
        if self.audio.ndim != 1:
            raise ValueError(f"audio must be 1-D mono samples, got shape {self.audio.shape}")

    @property
    def duration_ms(self) -> int:
        return round(len(self.audio) * 1000 / SAMPLE_RATE)


@dataclass(frozen=True)
class TranscriptionResult:
    text: str
    language: Distribution
    emotion: Distribution
    event: Distribution
    confidence: float
    duration_ms: int
    raw_text: str = ""
    words: list[Word] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    # The request's keyterms that occur in ``text``, in order; None when it had none.
    keyterms_matched: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.words is None:
            out.pop("words")
        if self.keyterms_matched is None:
            out.pop("keyterms_matched")
        if not self.extras:
            out.pop("extras")
        return out


@dataclass(frozen=True)
class ModelInfo:
    name: str
    revision: str
    device: str
    precision: str
    backend: str = "torch"


@runtime_checkable
class Engine(Protocol):
    """Turns a batch of utterances into rich results in one model pass."""

    @property
    def info(self) -> ModelInfo: ...

    def transcribe(self, requests: Sequence[TranscriptionRequest]) -> list[TranscriptionResult]: ...
