"""Pure functions from CTC log-probabilities to a rich result.

No torch here: the model side reduces its (T, V) output to the compact ``CtcFrames`` below,
and everything that decides what the user sees (distributions, text, confidence, words) is
a plain function of those arrays, tested with property tests. The text is greedy CTC, or,
for a request with keyterms, the biased beam search of ``beam_search.py`` over the text frames'
top-k tokens (``CtcFrames.text_top``); the rich-tag frames are read the same way either way.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from emostt.inference.beam_search import align, prefix_beam_search
from emostt.inference.context_graph import ContextGraph
from emostt.inference.engine import Distribution, TranscriptionRequest, TranscriptionResult, Word
from emostt.inference.rich_tokens import (
    EMOTION_FRAME,
    EVENT_FRAME,
    LANGUAGE_FRAME,
    QUERY_FRAMES,
    RichVocab,
    strip_rich_tags,
)
from emostt.vocabulary.labels import UNKNOWN_EMOTION

FRAME_MS = 60  # one LFR frame: 10 ms shift x lfr_n 6

FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class CtcFrames:
    """What the decoder needs from one utterance's CTC output (all frames, queries included).

    best_ids/best_logp/blank_logp: shape (T,), the per-frame argmax id, its log-prob, and the
    blank log-prob. query_logp: shape (QUERY_FRAMES, len(rich_ids)), log-probs of the rich
    tokens at the query frames, columns in ``rich_ids`` order. text_top: for biased decoding
    only, the text frames' (after the query frames) top-k token ids and log-probs, (T - 4, k).
    """

    best_ids: IntArray
    best_logp: FloatArray
    blank_logp: FloatArray
    query_logp: FloatArray
    rich_ids: Sequence[int]
    text_top: tuple[IntArray, FloatArray] | None = None


@dataclass(frozen=True)
class TokenSpan:
    token_id: int
    first_frame: int
    last_frame: int
    confidence: float


def class_distribution(logp: Mapping[int, float], ids: Mapping[str, int]) -> Distribution:
    """Softmax restricted to one class's tokens: renormalise their probabilities to sum to 1."""
    labels = list(ids)
    values = np.array([logp[ids[label]] for label in labels], dtype=np.float64)
    values -= values.max()
    probs = np.exp(values)
    probs /= probs.sum()
    scores = {label: float(p) for label, p in zip(labels, probs, strict=True)}
    return Distribution(label=labels[int(np.argmax(probs))], scores=scores)


def without_label(dist: Distribution, label: str) -> Distribution:
    """The same distribution conditioned on ``label`` not being the answer."""
    kept = {k: v for k, v in dist.scores.items() if k != label}
    total = sum(kept.values())
    kept = dict.fromkeys(kept, 1.0 / len(kept)) if total <= 0.0 else {k: v / total for k, v in kept.items()}
    return Distribution(label=max(kept, key=kept.__getitem__), scores=kept)


def collapse_ctc(best_ids: IntArray, best_logp: FloatArray, blank_id: int) -> list[TokenSpan]:
    """Greedy CTC: merge runs of the same id, drop blanks; confidence = mean prob over the run."""
    spans: list[TokenSpan] = []
    n = len(best_ids)
    start = 0
    while start < n:
        end = start
        while end + 1 < n and best_ids[end + 1] == best_ids[start]:
            end += 1
        token = int(best_ids[start])
        if token != blank_id:
            conf = float(np.exp(np.asarray(best_logp[start : end + 1], dtype=np.float64)).mean())
            spans.append(TokenSpan(token, start, end, min(max(conf, 0.0), 1.0)))
        start = end + 1
    return spans


def biased_spans(frames: CtcFrames, blank_id: int, graph: ContextGraph) -> list[TokenSpan] | None:
    """The text frames decoded by beam search with ``graph``'s bonuses, as token spans with
    confidences along the chosen tokens' best path; None without ``text_top`` or a path."""
    if frames.text_top is None:
        return None
    top_ids, top_logp = frames.text_top
    blank = frames.blank_logp[QUERY_FRAMES:]
    tokens = prefix_beam_search(top_ids, top_logp, blank, blank_id, graph)
    spans = align(tokens, top_ids, top_logp, blank)
    return None if spans is None else [TokenSpan(*span) for span in spans]


def utterance_confidence(spans: Sequence[TokenSpan], blank_logp: FloatArray) -> float:
    """Mean token confidence; with no token, how sure the model is that nothing was said."""
    if spans:
        value = float(np.mean([s.confidence for s in spans]))
    elif len(blank_logp):
        value = float(np.exp(np.asarray(blank_logp, dtype=np.float64)).mean())
    else:
        value = 0.0
    return min(max(value, 0.0), 1.0)


def _is_ideographic(ch: str) -> bool:
    name = unicodedata.name(ch, "")
    return name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL"))


@dataclass
class _WordBuilder:
    text: str
    start_ms: int
    end_ms: int
    confidence: float

    def extend(self, text: str, end_ms: int, confidence: float) -> None:
        self.text += text
        self.end_ms = end_ms
        self.confidence = min(self.confidence, confidence)


def group_words(pieces: Sequence[tuple[str, int, int, float]]) -> list[Word]:
    """Join sentencepiece pieces (text, start_ms, end_ms, confidence) into words.

    A piece starting with the word boundary marker opens a word; CJK, kana and hangul
    characters are words of their own; a word's confidence is its weakest piece.
    """
    words: list[_WordBuilder] = []
    open_word = False
    for text, start, end, conf in pieces:
        starts_word = text.startswith("▁")
        body = text.lstrip("▁")
        if not body:
            open_word = False
            continue
        if len(body) == 1 and _is_ideographic(body):
            words.append(_WordBuilder(body, start, end, conf))
            open_word = False
            continue
        if open_word and not starts_word and words:
            words[-1].extend(body, end, conf)
        else:
            words.append(_WordBuilder(body, start, end, conf))
        open_word = True
    return [Word(w.text, w.start_ms, w.end_ms, w.confidence) for w in words]


def decode_utterance(
    frames: CtcFrames,
    vocab: RichVocab,
    request: TranscriptionRequest,
    decode_ids: Callable[[list[int]], str],
    id_to_piece: Callable[[int], str],
    graph: ContextGraph | None = None,
) -> TranscriptionResult:
    """Everything the user sees, from one utterance's CTC frames; ``graph``: the request's
    keyterms (None: it has none; the text is greedy CTC and ``keyterms_matched`` None)."""
    column = {token: i for i, token in enumerate(frames.rich_ids)}

    def frame_logp(frame: int) -> dict[int, float]:
        return {token: float(frames.query_logp[frame, i]) for token, i in column.items()}

    language = class_distribution(frame_logp(LANGUAGE_FRAME), vocab.languages)
    emotion = class_distribution(frame_logp(EMOTION_FRAME), vocab.emotions)
    if request.known_emotion_only and UNKNOWN_EMOTION in emotion.scores:
        emotion = without_label(emotion, UNKNOWN_EMOTION)
    event = class_distribution(frame_logp(EVENT_FRAME), vocab.events)

    # raw_text mirrors funasr's own decoding: collapse over every frame, queries included.
    raw_spans = collapse_ctc(frames.best_ids, frames.best_logp, vocab.blank_id)
    raw_text = decode_ids([s.token_id for s in raw_spans])

    rich = set(vocab.rich_ids()) | {vocab.blank_id}
    text_spans = biased_spans(frames, vocab.blank_id, graph) if graph else None
    if text_spans is None:
        text_ids, text_logp = frames.best_ids[QUERY_FRAMES:], frames.best_logp[QUERY_FRAMES:]
        text_spans = collapse_ctc(text_ids, text_logp, vocab.blank_id)
    speech_spans = [
        s for s in text_spans if s.token_id not in rich and not id_to_piece(s.token_id).startswith("<|")
    ]
    text = strip_rich_tags(decode_ids([s.token_id for s in speech_spans]))
    confidence = utterance_confidence(speech_spans, frames.blank_logp[QUERY_FRAMES:])

    duration_ms = request.duration_ms
    words = None
    if request.word_timestamps:
        words = group_words(
            [
                (
                    id_to_piece(s.token_id),
                    min(s.first_frame * FRAME_MS, duration_ms),
                    min((s.last_frame + 1) * FRAME_MS, duration_ms),
                    s.confidence,
                )
                for s in speech_spans
            ]
        )
    return TranscriptionResult(
        text=text,
        language=language,
        emotion=emotion,
        event=event,
        confidence=confidence,
        duration_ms=duration_ms,
        raw_text=raw_text,
        words=words,
        keyterms_matched=None if graph is None else graph.matches([s.token_id for s in speech_spans]),
    )
