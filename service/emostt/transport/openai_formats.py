"""A file's transcript in OpenAI's response formats: json, text, srt, vtt, verbose_json, and the
server-sent events of ``stream=true``. Pure: results in, bodies out.

verbose_json is OpenAI's shape (``task``, ``language``, ``duration``, ``text``, ``segments``,
``words`` when asked, ``usage``) plus ours: on each segment ``emotion``, ``language`` and
``event`` as ``{label, scores}`` and ``confidence``; at the top level ``emotion``, ``event``,
``detected_language`` (``{label, scores}``: OpenAI's ``language`` stays a string) and
``confidence``, each a duration-weighted mean over the segments (files/aggregate.py).

OpenAI's per-segment decoder statistics are derived from what SenseVoice computes: CTC decoding
has no temperature or sampled tokens (``temperature`` 0, ``tokens`` empty), ``avg_logprob`` is
the log of the segment's mean token posterior, ``no_speech_prob`` the language head's
``nospeech`` score, ``compression_ratio`` Whisper's own (text bytes / zlib-compressed bytes).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

from emostt.files.aggregate import FileSummary
from emostt.files.transcribe import SegmentResult
from emostt.inference.engine import Distribution

LANGUAGE_NAMES = {"en": "english", "zh": "chinese", "yue": "cantonese", "ja": "japanese", "ko": "korean"}


def _distribution(d: Distribution | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"label": d.label, "scores": {k: round(v, 6) for k, v in d.scores.items()}}


def _seconds(value: float) -> float:
    return round(value, 3)


def language_name(summary: FileSummary, hint: str) -> str:
    """OpenAI's ``language``: a lowercase English name ("english"); ``nospeech`` when the segments
    hold none; the hint (or ``unknown``) for a file without segments."""
    label = summary.language.label if summary.language is not None else hint
    if label == "auto":
        return "unknown"
    return LANGUAGE_NAMES.get(label, label)


def usage(summary: FileSummary) -> dict[str, Any]:
    return {"type": "duration", "seconds": _seconds(summary.duration_s)}


def json_body(summary: FileSummary) -> dict[str, Any]:
    return {"text": summary.text, "usage": usage(summary)}


def text_body(summary: FileSummary) -> str:
    return summary.text + "\n"


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 4) if data else 0.0


def segment_body(item: SegmentResult) -> dict[str, Any]:
    seg, result = item.segment, item.result
    return {
        "id": seg.index,
        "seek": round(seg.start_s * 100),  # Whisper's unit: 10 ms frames
        "start": _seconds(seg.start_s),
        "end": _seconds(seg.end_s),
        "text": result.text,
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": round(math.log(max(result.confidence, 1e-6)), 6),
        "compression_ratio": compression_ratio(result.text),
        "no_speech_prob": round(result.language.scores.get("nospeech", 0.0), 6),
        "confidence": round(result.confidence, 6),
        "language": _distribution(result.language),
        "emotion": _distribution(result.emotion),
        "event": _distribution(result.event),
    }


def words_body(results: Sequence[SegmentResult]) -> list[dict[str, Any]]:
    words = []
    for item in results:
        offset = item.segment.start_s
        for word in item.result.words or []:
            words.append(
                {
                    "word": word.word,
                    "start": _seconds(offset + word.start_ms / 1000),
                    "end": _seconds(offset + word.end_ms / 1000),
                }
            )
    return words


def verbose_body(
    results: Sequence[SegmentResult], summary: FileSummary, granularities: Sequence[str], hint: str
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": language_name(summary, hint),
        "duration": _seconds(summary.duration_s),
        "text": summary.text,
    }
    if "segment" in granularities:
        body["segments"] = [segment_body(r) for r in results]
    if "word" in granularities:
        body["words"] = words_body(results)
    body["usage"] = usage(summary)
    body.update(extras(summary))
    return body


def extras(summary: FileSummary) -> dict[str, Any]:
    """Our top-level fields (verbose_json and the stream's done event)."""
    return {
        "confidence": round(summary.confidence, 6) if summary.confidence is not None else None,
        "detected_language": _distribution(summary.language),
        "emotion": _distribution(summary.emotion),
        "event": _distribution(summary.event),
        "degraded": summary.degraded,
    }


def _timestamp(seconds: float, separator: str) -> str:
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def _cues(results: Sequence[SegmentResult]) -> list[SegmentResult]:
    """Segments with text: an empty cue is not valid SRT."""
    return [r for r in results if r.result.text.strip()]


def srt_body(results: Sequence[SegmentResult]) -> str:
    blocks = []
    for number, item in enumerate(_cues(results), start=1):
        start = _timestamp(item.segment.start_s, ",")
        end = _timestamp(item.segment.end_s, ",")
        blocks.append(f"{number}\n{start} --> {end}\n{item.result.text.strip()}\n")
    return "\n".join(blocks)


def vtt_body(results: Sequence[SegmentResult]) -> str:
    blocks = ["WEBVTT\n"]
    for item in _cues(results):
        start = _timestamp(item.segment.start_s, ".")
        end = _timestamp(item.segment.end_s, ".")
        blocks.append(f"{start} --> {end}\n{item.result.text.strip()}\n")
    return "\n".join(blocks)


def delta_event(delta: str) -> dict[str, Any]:
    return {"type": "transcript.text.delta", "delta": delta}


def done_event(summary: FileSummary) -> dict[str, Any]:
    languages = (
        [{"code": summary.language.label}]
        if summary.language is not None and summary.language.label in LANGUAGE_NAMES
        else []
    )
    return {"type": "transcript.text.done", "text": summary.text, "languages": languages, **extras(summary)}
