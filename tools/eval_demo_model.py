#!/usr/bin/env python
"""Evaluate a model dir on the held-out synthetic clips (voices and speeds unseen in training).

Reports text exact match, word error rate, language / emotion / event accuracy and the
emotion confusion matrix, through the production engine (batched, language ``auto``):

    python tools/eval_demo_model.py --model demo [--out docs/bench/demo-eval.json]
    python tools/eval_demo_model.py --model demo --phone mulaw   # as a phone call carries it

``--phone mulaw|alaw``: every clip goes through what a call does to it first: sox resamples it to
8 kHz and encodes it as G.711 (the phone network), and the server's own decoder and resampler
bring it back to 16 kHz (what /ws/stt?encoding=mulaw&sample_rate=8000 does; tools/phone_line.py,
the same line the training's phone copies go through).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from emostt.inference.engine import TranscriptionRequest, TranscriptionResult
from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_data
from phone_line import SOX_G711, through_phone


def normalise(text: str) -> list[str]:
    """Words for scoring; CJK/kana/hangul text (no spaces) is scored per character."""
    compact = text.lower().strip()
    if compact and not compact.isascii():
        return [ch for ch in compact if not ch.isspace()]
    return compact.split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def score(clips: list[Any], results: list[TranscriptionResult]) -> dict[str, Any]:
    speech = [(c, r) for c, r in zip(clips, results, strict=True) if c.text]
    errors = sum(edit_distance(normalise(c.text), normalise(r.text)) for c, r in speech)
    ref_words = sum(len(normalise(c.text)) for c, _ in speech)
    emotions = sorted({c.emotion for c, _ in speech})
    confusion = Counter((c.emotion, r.emotion.label) for c, r in speech)
    by_language = {
        lang: sum(normalise(c.text) == normalise(r.text) for c, r in speech if c.language == lang)
        / max(sum(c.language == lang for c, _ in speech), 1)
        for lang in sorted({c.language for c, _ in speech})
    }
    return {
        "clips": len(clips),
        "speech_clips": len(speech),
        "text_exact_match": sum(normalise(c.text) == normalise(r.text) for c, r in speech) / len(speech),
        "word_error_rate": errors / max(ref_words, 1),
        "language_accuracy": sum(c.language == r.language.label for c, r in zip(clips, results, strict=True))
        / len(clips),
        "emotion_accuracy": sum(c.emotion == r.emotion.label for c, r in speech) / len(speech),
        "event_accuracy": sum(c.event == r.event.label for c, r in zip(clips, results, strict=True))
        / len(clips),
        "nospeech_empty_text": sum(not r.text for c, r in zip(clips, results, strict=True) if not c.text)
        / max(sum(not c.text for c in clips), 1),
        "exact_match_by_language": by_language,
        "emotion_confusion": {t: {p: confusion[(t, p)] for p in emotions} for t in emotions},
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["metrics"]
    lines = [
        "| metric | value |",
        "|---|---|",
        f"| held-out clips (speech) | {m['clips']} ({m['speech_clips']}) |",
        f"| text exact match | {m['text_exact_match']:.1%} |",
        f"| word error rate | {m['word_error_rate']:.1%} |",
        f"| language accuracy | {m['language_accuracy']:.1%} |",
        f"| emotion accuracy | {m['emotion_accuracy']:.1%} |",
        f"| event accuracy | {m['event_accuracy']:.1%} |",
        f"| non-speech clips with empty text | {m['nospeech_empty_text']:.1%} |",
        "",
        "Exact match by language: "
        + ", ".join(f"{k} {v:.0%}" for k, v in m["exact_match_by_language"].items()),
        "",
        "Emotion confusion (rows: label, columns: predicted):",
        "",
        "| | " + " | ".join(m["emotion_confusion"]) + " |",
        "|---|" + "---|" * len(m["emotion_confusion"]),
    ]
    for truth, row in m["emotion_confusion"].items():
        lines.append(f"| {truth} | " + " | ".join(str(v) for v in row.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--phone", choices=sorted(SOX_G711), default=None, help="through 8 kHz G.711 first")
    args = parser.parse_args()

    clips = demo_data.generate("heldout")
    if args.phone:
        clips = [dataclasses.replace(c, audio=through_phone(c.audio, args.phone)) for c in clips]
    engine = SenseVoiceEngine.load(
        args.model, EngineOptions(device="cpu", precision=args.precision, backend=args.backend)
    )
    results: list[TranscriptionResult] = []
    for i in range(0, len(clips), args.batch):
        chunk = clips[i : i + args.batch]
        results.extend(engine.transcribe([TranscriptionRequest(c.audio, language="auto") for c in chunk]))
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "model": args.model,
        "precision": args.precision,
        "backend": engine.info.backend,
        "phone": args.phone,
        "metrics": score(clips, results),
        "failures": [
            {
                "text": c.text,
                "got": r.text,
                "language": c.language,
                "emotion": c.emotion,
                "got_emotion": r.emotion.label,
                "voice": c.voice,
                "speed": c.speed,
            }
            for c, r in zip(clips, results, strict=True)
            if normalise(c.text) != normalise(r.text) or c.emotion != r.emotion.label
        ][:50],
    }
    print(markdown(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
