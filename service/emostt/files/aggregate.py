"""A file's transcript from its segments' results. Pure: no I/O, no clocks.

- Text: the segments' texts in order, joined by a space, except between two CJK characters
  (Chinese, Japanese and Korean text carries no spaces between segments). ``delta`` gives
  exactly the characters each segment appends, so streamed deltas add up to the final text.
- Distributions (language, emotion, event) and confidence over the whole file are
  duration-weighted means of the segments': every second of segmented audio counts the same,
  so a 15 s passage weighs fifteen times a 1 s interjection. A weighted mean of distributions
  is a distribution (it sums to 1); its label is its argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from emostt.files.transcribe import SegmentResult
from emostt.inference.engine import Distribution

# Scripts written without spaces between words: Han, kana, hangul, CJK punctuation, fullwidth forms.
_NO_SPACE_RANGES = (
    (0x3000, 0x30FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7AF),
    (0xF900, 0xFAFF),
    (0xFF00, 0xFFEF),
)


def _no_space(char: str) -> bool:
    return any(lo <= ord(char) <= hi for lo, hi in _NO_SPACE_RANGES)


def delta(previous: str, text: str) -> str:
    """What appending segment ``text`` adds to the transcript so far (``previous``)."""
    text = text.strip()
    if not text:
        return ""
    if not previous or (_no_space(previous[-1]) and _no_space(text[0])):
        return text
    return " " + text


def join_text(texts: Sequence[str]) -> str:
    joined = ""
    for text in texts:
        joined += delta(joined, text)
    return joined


def weighted_distribution(items: Sequence[tuple[Distribution, float]]) -> Distribution | None:
    """The weight-weighted mean of distributions (labels: the union), or None with no weight."""
    total = sum(weight for _, weight in items)
    if total <= 0:
        return None
    scores: dict[str, float] = {}
    for distribution, weight in items:
        for label, score in distribution.scores.items():
            scores[label] = scores.get(label, 0.0) + score * weight / total
    return Distribution(max(scores, key=lambda label: scores[label]), scores)


@dataclass(frozen=True)
class FileSummary:
    text: str
    duration_s: float  # the whole file, silences included
    confidence: float | None  # None: no segment (nothing was said)
    language: Distribution | None
    emotion: Distribution | None
    event: Distribution | None
    degraded: bool


def summarize(results: Sequence[SegmentResult], duration_s: float) -> FileSummary:
    weights = [max(r.segment.end - r.segment.start, 1) for r in results]
    total = sum(weights)
    return FileSummary(
        text=join_text([r.result.text for r in results]),
        duration_s=duration_s,
        confidence=(
            sum(r.result.confidence * w for r, w in zip(results, weights, strict=True)) / total
            if results
            else None
        ),
        language=weighted_distribution(
            [(r.result.language, w) for r, w in zip(results, weights, strict=True)]
        ),
        emotion=weighted_distribution([(r.result.emotion, w) for r, w in zip(results, weights, strict=True)]),
        event=weighted_distribution([(r.result.event, w) for r, w in zip(results, weights, strict=True)]),
        degraded=any(r.degraded for r in results),
    )
